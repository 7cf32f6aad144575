package sitetest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Model is float32 tensors by name, each with its shape.
type Model map[string]Tensor

// Tensor is a FLOAT32 tensor's shape and elements.
type Tensor struct {
	Shape  []uint64
	Values []float32
}

// WriteFedAvgJob writes a job folder running FedAvg for rounds rounds on
// every connected client (at least minClients), starting from model, and
// returns its path. Extra workflow arguments are merged into the defaults.
func WriteFedAvgJob(t testing.TB, name string, minClients, rounds int, model Model, extra map[string]any) string {
	t.Helper()
	folder := filepath.Join(t.TempDir(), name)
	args := map[string]any{"num_rounds": rounds, "min_clients": minClients, "initial_model": "model.safetensors"}
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
	writeFile(t, filepath.Join(folder, "app", "model.safetensors"), EncodeSafetensors(model))
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

// EncodeSafetensors writes a model in the safetensors format (an 8-byte
// little-endian header length, a JSON header, then the tensors' bytes).
func EncodeSafetensors(model Model) []byte {
	names := make([]string, 0, len(model))
	for name := range model {
		names = append(names, name)
	}
	sort.Strings(names)
	header := map[string]any{}
	var data []byte
	for _, name := range names {
		tensor := model[name]
		start := len(data)
		for _, value := range tensor.Values {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(value))
		}
		header[name] = map[string]any{"dtype": "F32", "shape": tensor.Shape, "data_offsets": []int{start, len(data)}}
	}
	text, _ := json.Marshal(header)
	for len(text)%8 != 0 {
		text = append(text, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(text)))
	return append(append(out, text...), data...)
}

// ReadSafetensors reads a model written in the safetensors format (F32 tensors only).
func ReadSafetensors(path string) (Model, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(content) < 8 {
		return nil, fmt.Errorf("%s: too short for safetensors", path)
	}
	length := binary.LittleEndian.Uint64(content)
	if length > uint64(len(content)-8) {
		return nil, fmt.Errorf("%s: header of %d bytes in a %d-byte file", path, length, len(content))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(content[8:8+length], &header); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data := content[8+length:]
	model := Model{}
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var entry struct {
			Dtype       string   `json:"dtype"`
			Shape       []uint64 `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &entry); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		if entry.Dtype != "F32" || len(entry.DataOffsets) != 2 || entry.DataOffsets[1] > uint64(len(data)) || entry.DataOffsets[0] > entry.DataOffsets[1] {
			return nil, fmt.Errorf("%s: tensor %s: not an F32 tensor within the file", path, name)
		}
		bytes := data[entry.DataOffsets[0]:entry.DataOffsets[1]]
		values := make([]float32, len(bytes)/4)
		for i := range values {
			values[i] = math.Float32frombits(binary.LittleEndian.Uint32(bytes[4*i:]))
		}
		model[name] = Tensor{Shape: entry.Shape, Values: values}
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
