package stat_test

import (
	"bytes"
	"io/fs"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"meshtls/fixtures/synth"
	"meshtls/stat"
)

// synthBodies is one scrape of 100 synthetic proxies.
func synthBodies(b *testing.B) ([][]byte, int64) {
	fsys, _ := synth.Capture(100)
	var bodies [][]byte
	var size int64
	_ = fs.WalkDir(fsys, "000", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			body, _ := fs.ReadFile(fsys, path)
			bodies = append(bodies, body)
			size += int64(len(body))
		}
		return err
	})
	if len(bodies) != 100 {
		b.Fatalf("%d bodies", len(bodies))
	}
	return bodies, size
}

// BenchmarkParse compares the two parsers on the same text: expfmt's,
// which stat used first, and the Prometheus server's, which it uses now.
func BenchmarkParse(b *testing.B) {
	bodies, size := synthBodies(b)
	b.Run("expfmt", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			for _, body := range bodies {
				p := expfmt.NewTextParser(model.UTF8Validation)
				if _, err := p.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("textparse", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			for _, body := range bodies {
				if _, err := stat.ParseScrape(body, map[string]string{"namespace": "ns", "pod": "p"}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
