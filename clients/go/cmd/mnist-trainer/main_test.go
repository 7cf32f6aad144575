package main_test

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"campfire.dev/clients/go/admin"
	adminv1 "campfire.dev/clients/go/gen/campfire/admin/v1"
	"campfire.dev/clients/go/internal/sitetest"
	"campfire.dev/clients/go/safetensors"
	"campfire.dev/clients/go/transport"
)

// writeShard writes a shard of synthetic "digits": class c lights rows
// 2c..2c+2 of the 28x28 image, under uniform noise, so a softmax model can
// learn them in a round or two.
func writeShard(t *testing.T, path string, seed uint64, trainSize, validationSize int) {
	random := rand.New(rand.NewPCG(seed, 1))
	part := func(size int) (safetensors.Tensor, safetensors.Tensor) {
		images := make([]float32, size*784)
		labels := make([]byte, size)
		for i := range size {
			label := random.IntN(10)
			labels[i] = byte(label)
			for p := range 784 {
				images[i*784+p] = 0.3 * random.Float32()
				if row := p / 28; row >= 2*label && row < 2*label+3 {
					images[i*784+p] += 0.7
				}
			}
		}
		return safetensors.F32([]uint64{uint64(size), 784}, images), safetensors.Tensor{DType: "U8", Shape: []uint64{uint64(size)}, Data: labels}
	}
	trainImages, trainLabels := part(trainSize)
	validationImages, validationLabels := part(validationSize)
	content := safetensors.Encode(map[string]safetensors.Tensor{
		"train_images": trainImages, "train_labels": trainLabels,
		"validation_images": validationImages, "validation_labels": validationLabels,
	})
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Two Go trainers run a FedAvg job with validation from no initial model to a
// model that classifies the synthetic digits.
func TestTwoGoTrainersLearnTheDigitsWithFedAvg(t *testing.T) {
	work := t.TempDir()
	binary := filepath.Join(work, "mnist-trainer")
	if output, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, output)
	}
	site := sitetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i, client := range []string{"digits-a", "digits-b"} {
		shard := filepath.Join(work, client+".safetensors")
		writeShard(t, shard, uint64(i+1), 400, 200)
		trainer := exec.CommandContext(ctx, binary, "--site", site.Address, "--client", client, "--shard", shard)
		if err := trainer.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { trainer.Process.Kill(); trainer.Wait() })
	}

	s, err := admin.Dial(admin.Options{Options: transport.Options{Site: site.Address}, Token: sitetest.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	folder := sitetest.WriteFedAvgJob(t, "go-digits", 2, 3, nil, map[string]any{"validation_task_name": "validate", "key_metric": "accuracy"})
	id, err := s.SubmitFolder(ctx, folder)
	if err != nil {
		t.Fatal(err)
	}
	var last *adminv1.JobMeta
	for update, err := range s.Monitor(ctx, id, 0) {
		if err != nil {
			t.Fatal(err)
		}
		last = update.GetMeta()
	}
	if last.GetStatus() != adminv1.RunStatus_RUN_STATUS_FINISHED_COMPLETED {
		t.Fatalf("job ended %s: %s", last.GetStatus(), last.GetEndReason())
	}
	if accuracy := last.GetProgress().GetLatestMetrics()["global_accuracy"]; accuracy < 0.9 {
		t.Fatalf("the global model's validation accuracy is %v, want at least 0.9 (metrics %v)", accuracy, last.GetProgress().GetLatestMetrics())
	}
	dir := t.TempDir()
	if _, err := s.Download(ctx, id, dir); err != nil {
		t.Fatal(err)
	}
	final, err := sitetest.ReadSafetensors(filepath.Join(dir, "models", "final.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if weight := final["fc.weight"]; len(weight.Shape) != 2 || weight.Shape[0] != 10 || weight.Shape[1] != 784 {
		t.Fatalf("final fc.weight has shape %v, want [10 784]", weight.Shape)
	}
}
