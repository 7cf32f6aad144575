package main

import (
	"fmt"
	"math"
	"math/rand/v2"

	"campfire.dev/clients/go/agent"
	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
)

// The model is the MNIST example's "softmax": multinomial logistic
// regression, tensors fc.weight [10, 784] and fc.bias [10], as
// examples/mnist/model.ts names them, so Go and TypeScript trainers can
// average their models in one FedAvg job.
const (
	pixels  = 28 * 28
	classes = 10
)

type model struct {
	weight []float32 // classes x pixels, row-major
	bias   []float32
}

// dataset is images (size x 784, values in [0, 1]) and their labels.
type dataset struct {
	images []float32
	labels []uint8
}

func (d dataset) size() int { return len(d.labels) }

func zeroModel() *model {
	return &model{weight: make([]float32, classes*pixels), bias: make([]float32, classes)}
}

// modelFrom reads fc.weight and fc.bias from a task's tensors; a task
// without tensors (a first round without an initial model) starts from zeros.
func modelFrom(tensors []*commonv1.Tensor) (*model, error) {
	if len(tensors) == 0 {
		return zeroModel(), nil
	}
	m := &model{}
	for _, tensor := range tensors {
		values, err := agent.Float32s(tensor)
		if err != nil {
			return nil, err
		}
		switch tensor.GetName() {
		case "fc.weight":
			m.weight = values
		case "fc.bias":
			m.bias = values
		}
	}
	if len(m.weight) != classes*pixels || len(m.bias) != classes {
		return nil, fmt.Errorf("the task's model is not the softmax model (fc.weight [10, 784], fc.bias [10])")
	}
	return m, nil
}

func (m *model) tensors() []*commonv1.Tensor {
	return []*commonv1.Tensor{
		agent.Float32Tensor("fc.weight", []uint64{classes, pixels}, m.weight),
		agent.Float32Tensor("fc.bias", []uint64{classes}, m.bias),
	}
}

// probabilities writes the softmax of the sample's logits into out.
func (m *model) probabilities(image []float32, out []float64) {
	largest := math.Inf(-1)
	for c := range classes {
		logit := float64(m.bias[c])
		row := m.weight[c*pixels : (c+1)*pixels]
		for p, x := range image {
			logit += float64(row[p] * x)
		}
		out[c] = logit
		largest = max(largest, logit)
	}
	var sum float64
	for c := range out {
		out[c] = math.Exp(out[c] - largest)
		sum += out[c]
	}
	for c := range out {
		out[c] /= sum
	}
}

// train runs epochs of minibatch SGD over data in a seeded order.
func (m *model) train(data dataset, epochs int, learningRate float64, batchSize int, seed uint64) {
	order := make([]int, data.size())
	for i := range order {
		order[i] = i
	}
	random := rand.New(rand.NewPCG(seed, 0x5eed))
	gradWeight := make([]float64, classes*pixels)
	gradBias := make([]float64, classes)
	p := make([]float64, classes)
	for range epochs {
		random.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for start := 0; start < len(order); start += batchSize {
			batch := order[start:min(start+batchSize, len(order))]
			clear(gradWeight)
			clear(gradBias)
			for _, index := range batch {
				image := data.images[index*pixels : (index+1)*pixels]
				m.probabilities(image, p)
				p[data.labels[index]]--
				for c := range classes {
					gradBias[c] += p[c]
					row := gradWeight[c*pixels : (c+1)*pixels]
					for q, x := range image {
						row[q] += p[c] * float64(x)
					}
				}
			}
			step := learningRate / float64(len(batch))
			for i := range m.weight {
				m.weight[i] -= float32(step * gradWeight[i])
			}
			for c := range m.bias {
				m.bias[c] -= float32(step * gradBias[c])
			}
		}
	}
}

// evaluate returns the accuracy and mean cross-entropy loss on data.
func (m *model) evaluate(data dataset) (accuracy, loss float64) {
	if data.size() == 0 {
		return 0, 0
	}
	p := make([]float64, classes)
	correct := 0
	for i := range data.size() {
		m.probabilities(data.images[i*pixels:(i+1)*pixels], p)
		best := 0
		for c := range p {
			if p[c] > p[best] {
				best = c
			}
		}
		if best == int(data.labels[i]) {
			correct++
		}
		loss -= math.Log(max(p[data.labels[i]], 1e-12))
	}
	return float64(correct) / float64(data.size()), loss / float64(data.size())
}
