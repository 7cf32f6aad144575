package agent

import (
	"encoding/binary"
	"fmt"
	"math"

	commonv1 "campfire.dev/clients/go/gen/campfire/common/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Float32s reads a FLOAT32 tensor's elements (the wire is row-major, little-endian).
func Float32s(tensor *commonv1.Tensor) ([]float32, error) {
	if tensor.GetDtype() != commonv1.DType_D_TYPE_FLOAT32 {
		return nil, fmt.Errorf("tensor %s: %s, not FLOAT32", tensor.GetName(), tensor.GetDtype())
	}
	elements := uint64(1)
	for _, size := range tensor.GetShape() {
		elements *= size
	}
	data := tensor.GetData()
	if uint64(len(data)) != elements*4 {
		return nil, fmt.Errorf("tensor %s: %d bytes, shape %v needs %d", tensor.GetName(), len(data), tensor.GetShape(), elements*4)
	}
	values := make([]float32, elements)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return values, nil
}

// Float32Tensor makes a FLOAT32 tensor of the given shape.
func Float32Tensor(name string, shape []uint64, values []float32) *commonv1.Tensor {
	data := make([]byte, 4*len(values))
	for i, value := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(value))
	}
	return &commonv1.Tensor{Name: name, Dtype: commonv1.DType_D_TYPE_FLOAT32, Shape: shape, Data: data}
}

// PlusOne is the example trainer: every FLOAT32 element plus one, names,
// shapes and dtypes kept, and NUM_STEPS_CURRENT_ROUND = 1 (FedAvg weighs
// results by it).
func PlusOne(data *commonv1.DataExchange) (*commonv1.DataExchange, error) {
	result := &commonv1.DataExchange{Kind: commonv1.DataKind_DATA_KIND_WEIGHTS}
	for _, tensor := range data.GetTensors() {
		values, err := Float32s(tensor)
		if err != nil {
			return nil, err
		}
		for i := range values {
			values[i]++
		}
		result.Tensors = append(result.Tensors, Float32Tensor(tensor.GetName(), tensor.GetShape(), values))
	}
	meta, err := structpb.NewStruct(map[string]any{"NUM_STEPS_CURRENT_ROUND": 1})
	result.Meta = meta
	return result, err
}
