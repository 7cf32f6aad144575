// Package safetensors reads and writes the safetensors format that Campfire
// uses for models (a job's initial_model, the downloaded models/*.safetensors):
// an 8-byte little-endian header length, a JSON header of name -> {dtype,
// shape, data_offsets}, then the tensors' bytes, row-major, little-endian.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
)

// Tensor is one tensor: its safetensors dtype ("F32", "U8", ...), shape and bytes.
type Tensor struct {
	DType string
	Shape []uint64
	Data  []byte
}

var elementBytes = map[string]uint64{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

// maxHeaderBytes bounds the JSON header, whatever the file says.
const maxHeaderBytes = 100 << 20

// Decode reads a safetensors file's content. Every tensor's offsets must lie
// within the file and fit its dtype and shape.
func Decode(content []byte) (map[string]Tensor, error) {
	if len(content) < 8 {
		return nil, errors.New("safetensors: shorter than its 8-byte header length")
	}
	length := binary.LittleEndian.Uint64(content)
	if length > maxHeaderBytes || length > uint64(len(content)-8) {
		return nil, fmt.Errorf("safetensors: a header of %d bytes in a file of %d", length, len(content))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(content[8:8+length], &header); err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	data := content[8+length:]
	tensors := map[string]Tensor{}
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var entry struct {
			DType       string   `json:"dtype"`
			Shape       []uint64 `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &entry); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		size, known := elementBytes[entry.DType]
		if !known {
			return nil, fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", name, entry.DType)
		}
		if len(entry.DataOffsets) != 2 || entry.DataOffsets[0] > entry.DataOffsets[1] || entry.DataOffsets[1] > uint64(len(data)) {
			return nil, fmt.Errorf("safetensors: tensor %q: offsets %v outside the %d data bytes", name, entry.DataOffsets, len(data))
		}
		elements := uint64(1)
		for _, dimension := range entry.Shape {
			elements *= dimension
		}
		if elements*size != entry.DataOffsets[1]-entry.DataOffsets[0] {
			return nil, fmt.Errorf("safetensors: tensor %q: shape %v of %s needs %d bytes, its offsets hold %d", name, entry.Shape, entry.DType, elements*size, entry.DataOffsets[1]-entry.DataOffsets[0])
		}
		tensors[name] = Tensor{DType: entry.DType, Shape: entry.Shape, Data: data[entry.DataOffsets[0]:entry.DataOffsets[1]]}
	}
	return tensors, nil
}

// Encode writes tensors in name order.
func Encode(tensors map[string]Tensor) []byte {
	names := make([]string, 0, len(tensors))
	for name := range tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	header := map[string]any{}
	var data []byte
	for _, name := range names {
		tensor := tensors[name]
		header[name] = map[string]any{"dtype": tensor.DType, "shape": tensor.Shape, "data_offsets": []int{len(data), len(data) + len(tensor.Data)}}
		data = append(data, tensor.Data...)
	}
	text, _ := json.Marshal(header)
	for len(text)%8 != 0 {
		text = append(text, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(text)))
	return append(append(out, text...), data...)
}

// Float32s reads an F32 tensor's elements.
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("safetensors: %s, not F32", t.DType)
	}
	values := make([]float32, len(t.Data)/4)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return values, nil
}

// F32 makes an F32 tensor.
func F32(shape []uint64, values []float32) Tensor {
	data := make([]byte, 4*len(values))
	for i, value := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(value))
	}
	return Tensor{DType: "F32", Shape: shape, Data: data}
}
