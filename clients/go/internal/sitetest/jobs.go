package sitetest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"campfire.dev/clients/go/safetensors"
)

// Model is float32 tensors by name, each with its shape.
type Model map[string]Tensor

// Tensor is a FLOAT32 tensor's shape and elements.
type Tensor struct {
	Shape  []uint64
	Values []float32
}

// WriteFedAvgJob writes a job folder running FedAvg for rounds rounds on
// every connected client (at least minClients), starting from model (or,
// when nil, from the clients' own: the first round sends no tensors), and
// returns its path. Extra workflow arguments are merged into the defaults.
func WriteFedAvgJob(t testing.TB, name string, minClients, rounds int, model Model, extra map[string]any) string {
	t.Helper()
	folder := filepath.Join(t.TempDir(), name)
	args := map[string]any{"num_rounds": rounds, "min_clients": minClients}
	if model != nil {
		args["initial_model"] = "model.safetensors"
		writeFile(t, filepath.Join(folder, "app", "model.safetensors"), EncodeSafetensors(model))
	}
	for key, value := range extra {
		args[key] = value
	}
	files := map[string]any{
		"meta.json":                         map[string]any{"name": name, "deploy_map": map[string]any{"app": []string{"@ALL"}}, "min_clients": minClients},
		"app/config/config_fed_server.json": map[string]any{"workflow": "fedavg", "args": args},
		"app/config/config_fed_client.json": map[string]any{"epochs": 1},
	}
	for path, content := range files {
		text, err := json.Marshal(content)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(folder, path), text)
	}
	return folder
}

func writeFile(t testing.TB, path string, content []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// EncodeSafetensors writes a model in the safetensors format.
func EncodeSafetensors(model Model) []byte {
	tensors := map[string]safetensors.Tensor{}
	for name, tensor := range model {
		tensors[name] = safetensors.F32(tensor.Shape, tensor.Values)
	}
	return safetensors.Encode(tensors)
}

// ReadSafetensors reads a model of F32 tensors from a safetensors file.
func ReadSafetensors(path string) (Model, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tensors, err := safetensors.Decode(content)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	model := Model{}
	for name, tensor := range tensors {
		values, err := tensor.Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		model[name] = Tensor{Shape: tensor.Shape, Values: values}
	}
	return model, nil
}

// Ramp is a tensor of the given shape whose elements count up from start by step.
func Ramp(shape []uint64, start, step float32) Tensor {
	count := uint64(1)
	for _, size := range shape {
		count *= size
	}
	values := make([]float32, count)
	for i := range values {
		values[i] = start + step*float32(i%1000)
	}
	return Tensor{Shape: shape, Values: values}
}
