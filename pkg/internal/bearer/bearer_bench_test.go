package bearer

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"
)

func tokensFile(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "token-%032d\n", i)
	}
	return b.String()
}

// BenchmarkTapHandle is the per-Export cost of authentication on gRPC with
// 1 and 16 tokens in the file (every token is compared on every request).
func BenchmarkTapHandle(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			a := benchAuth(b, tokensFile(n))
			h := a.TapHandle("/m")
			info := &tap.Info{FullMethodName: "/m", Header: metadata.Pairs("authorization", fmt.Sprintf("Bearer token-%032d", n-1))}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h(context.Background(), info); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
