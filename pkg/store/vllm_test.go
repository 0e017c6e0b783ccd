package store

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// vllmTemplate is one series of a vLLM /metrics page: its name and its
// labels, from testdata/vllm-metrics-sample.prom (348 series per server).
type vllmTemplate struct {
	name   string
	labels [][2]string
}

func loadVLLMTemplates(tb testing.TB) []vllmTemplate {
	tb.Helper()
	f, err := os.Open("testdata/vllm-metrics-sample.prom")
	require.NoError(tb, err)
	defer func() { _ = f.Close() }()
	var out []vllmTemplate
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		var tpl vllmTemplate
		i := strings.IndexAny(line, "{ ")
		require.Positive(tb, i, line)
		tpl.name = line[:i]
		if line[i] == '{' {
			rest := line[i+1:]
			for rest != "" && rest[0] != '}' {
				eq := strings.IndexByte(rest, '=')
				require.Positive(tb, eq, line)
				name := rest[:eq]
				rest = rest[eq+2:] // skip ="
				var val strings.Builder
				for rest[0] != '"' {
					if rest[0] == '\\' {
						rest = rest[1:]
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				tpl.labels = append(tpl.labels, [2]string{name, val.String()})
				rest = strings.TrimPrefix(rest[1:], ",")
			}
		}
		out = append(out, tpl)
	}
	require.NoError(tb, sc.Err())
	require.Len(tb, out, 348)
	return out
}

// vllmFleet yields realistic label sets for n series: vLLM servers (one
// pod each, 348 series per pod) spread over deployments and namespaces,
// with the labels the receiver adds from resource attributes (job,
// instance, namespace, pod, deployment). Each server's model_name is its
// deployment's model.
type vllmFleet struct {
	tpls []vllmTemplate
	b    labels.ScratchBuilder
}

func newVLLMFleet(tb testing.TB) *vllmFleet { return &vllmFleet{tpls: loadVLLMTemplates(tb)} }

// series returns the labels and identity hash of series i.
func (f *vllmFleet) series(i int) (labels.Labels, uint64) {
	pod, tpl := i/len(f.tpls), f.tpls[i%len(f.tpls)]
	deploy := pod / 8
	f.b.Reset()
	f.b.Add("__name__", tpl.name)
	for _, l := range tpl.labels {
		if l[0] == "model_name" {
			l[1] = fmt.Sprintf("org-%d/model-%d-instruct", deploy%13, deploy)
		}
		f.b.Add(l[0], l[1])
	}
	f.b.Add("namespace", fmt.Sprintf("inference-%d", deploy/16))
	f.b.Add("deployment", fmt.Sprintf("vllm-model-%d", deploy))
	f.b.Add("pod", fmt.Sprintf("vllm-model-%d-6d9c7b8f5-%05x", deploy, pod*2654435761%(1<<20)))
	f.b.Add("instance", fmt.Sprintf("10.%d.%d.%d:8000", pod>>16&255, pod>>8&255, pod&255))
	f.b.Add("job", "vllm")
	f.b.Sort()
	lset := f.b.Labels()
	return lset, lset.Hash()
}
