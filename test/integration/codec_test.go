package integration

import (
	"google.golang.org/grpc/mem"
)

// rawMessage is a pre-encoded protobuf body, sent as is.
type rawMessage []byte

// rawCodec sends rawMessage bytes unchanged, so a test can put garbage on
// the wire under a real method name.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawMessage) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
