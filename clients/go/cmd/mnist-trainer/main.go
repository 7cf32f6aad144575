// Command mnist-trainer is the MNIST example's trainer in Go: it joins a site
// as one client and trains the example's softmax model (fc.weight, fc.bias)
// on that client's shard, so that Go, Python and TypeScript trainers can
// take part in one FedAvg job.
//
//	go run ./cmd/mnist-trainer --site 127.0.0.1:7443 --client site-2 --shard site-2.safetensors
//
// The shard is a safetensors file: train_images F32 [n, 784] (pixels in
// [0, 1]), train_labels U8 [n], validation_images, validation_labels. Tasks:
// "train" (local epochs from the task's model; the result carries
// NUM_STEPS_CURRENT_ROUND = samples), "validate" (METRICS accuracy and loss
// of the task's model on the validation shard), "submit_model" (the latest
// local model). It exits 0 when the job ends.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"campfire.dev/clients/go/agent"
	agentv1 "campfire.dev/clients/go/gen/campfire/agent/v1"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"campfire.dev/clients/go/safetensors"
	"google.golang.org/protobuf/types/known/structpb"
)

type trainer struct {
	train, validation dataset
	epochs, batchSize int
	learningRate      float64
	seed              uint64
	rounds            uint64
	latest            *model
	logger            *slog.Logger
}

func main() {
	var options agent.Options
	var shard string
	t := &trainer{logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	flag.StringVar(&options.Site, "site", "127.0.0.1:7443", "the site, host:port")
	flag.StringVar(&options.ClientName, "client", "", "the client this trainer acts for (required)")
	flag.StringVar(&options.AgentID, "agent-id", "", "a stable agent id (default <client>-<random>)")
	flag.StringVar(&options.TLSDir, "tls-dir", "", "the client's kit folder; plain text without")
	flag.StringVar(&shard, "shard", "", "the client's data: a safetensors file (required)")
	flag.IntVar(&t.epochs, "epochs", 1, "local epochs per train task")
	flag.Float64Var(&t.learningRate, "lr", 0.3, "learning rate")
	flag.IntVar(&t.batchSize, "batch-size", 32, "minibatch size")
	flag.Uint64Var(&t.seed, "seed", 42, "seed of the batch order")
	flag.Parse()
	if options.ClientName == "" || shard == "" {
		fmt.Fprintln(os.Stderr, "--client and --shard are required")
		os.Exit(2)
	}
	var err error
	if t.train, t.validation, err = readShard(shard); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	options.TaskNames = []string{"train", "validate", "submit_model"}
	options.Logger = t.logger
	a, err := agent.New(options)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t.logger.Info("trainer ready", "client", options.ClientName, "train", t.train.size(), "validation", t.validation.size())
	unacknowledged := func(task *agent.Task, _ agentv1.ResultDisposition, err error) {
		if err != nil {
			t.logger.Warn("result not acknowledged", "task", task.ID, "error", err)
		}
	}
	if err := a.Serve(ctx, t.handle, unacknowledged); !agent.EndedNormally(err) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// handle runs one task and returns its outcome.
func (t *trainer) handle(task *agent.Task) (commonv1.ReturnCode, *commonv1.DataExchange) {
	m, err := modelFrom(task.Data.GetTensors())
	if task.Name == "validate" && len(task.Data.GetTensors()) == 0 && t.latest != nil {
		m = t.latest // nothing to judge: its latest local model, as the TypeScript trainer
	}
	if err != nil && task.Name != "submit_model" {
		t.logger.Warn("bad task data", "task", task.ID, "error", err)
		return commonv1.ReturnCode_RETURN_CODE_BAD_TASK_DATA, nil
	}
	switch task.Name {
	case "train":
		t.rounds++
		m.train(t.train, t.epochs, t.learningRate, t.batchSize, t.seed+t.rounds)
		t.latest = m
		accuracy, loss := m.evaluate(t.validation)
		t.logger.Info("trained", "task", task.ID, "samples", t.train.size(), "validation_accuracy", accuracy, "validation_loss", loss)
		meta, _ := structpb.NewStruct(map[string]any{"NUM_STEPS_CURRENT_ROUND": t.train.size()})
		return commonv1.ReturnCode_RETURN_CODE_OK, &commonv1.DataExchange{Kind: commonv1.DataKind_DATA_KIND_WEIGHTS, Tensors: m.tensors(), Meta: meta}
	case "validate":
		accuracy, loss := m.evaluate(t.validation)
		values, _ := structpb.NewStruct(map[string]any{"accuracy": accuracy, "loss": loss})
		return commonv1.ReturnCode_RETURN_CODE_OK, &commonv1.DataExchange{Kind: commonv1.DataKind_DATA_KIND_METRICS, Values: values}
	case "submit_model":
		if t.latest == nil {
			return commonv1.ReturnCode_RETURN_CODE_EMPTY_RESULT, nil
		}
		return commonv1.ReturnCode_RETURN_CODE_OK, &commonv1.DataExchange{Kind: commonv1.DataKind_DATA_KIND_WEIGHTS, Tensors: t.latest.tensors()}
	}
	return commonv1.ReturnCode_RETURN_CODE_TASK_UNSUPPORTED, nil
}

// readShard reads a client's train and validation data.
func readShard(path string) (train, validation dataset, err error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return train, validation, err
	}
	tensors, err := safetensors.Decode(content)
	if err != nil {
		return train, validation, fmt.Errorf("%s: %w", path, err)
	}
	part := func(prefix string) (dataset, error) {
		images, labels := tensors[prefix+"_images"], tensors[prefix+"_labels"]
		values, err := images.Float32s()
		if err != nil || labels.DType != "U8" || len(values) != pixels*len(labels.Data) {
			return dataset{}, fmt.Errorf("%s: needs %s_images F32 [n, 784] and %s_labels U8 [n]", path, prefix, prefix)
		}
		for _, label := range labels.Data {
			if label >= classes {
				return dataset{}, fmt.Errorf("%s: %s_labels holds %d, not a digit", path, prefix, label)
			}
		}
		return dataset{images: values, labels: labels.Data}, nil
	}
	if train, err = part("train"); err != nil {
		return train, validation, err
	}
	validation, err = part("validation")
	return train, validation, err
}
