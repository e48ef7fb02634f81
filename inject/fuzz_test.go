package inject

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzInject injects any manifest, as `linkerd inject FILE` does. An error
// is one line naming the input; output is a YAML stream of as many
// documents as the input had, and injecting it again changes nothing: the
// same bytes, the same reports.
func FuzzInject(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: a\n    image: x\n"), true)
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[]}}}}]}`), false)
	f.Add([]byte("kind: CronJob\nmetadata: {generateName: x-}\n---\n# c\n...\n---\nkind: Pod\nspec: {hostNetwork: true}\n"), true)
	f.Fuzz(func(t *testing.T, input []byte, tls bool) {
		o := testOptions
		if tls {
			o.TLS = "optional"
		}
		once, err := Inject(input, "in.yaml", o)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || !strings.HasPrefix(msg, "in.yaml: ") {
				t.Fatalf("error is not one line naming the input: %q", msg)
			}
			return
		}
		if n := len(splitDocuments(once.YAML)); n != once.Documents {
			t.Fatalf("%d documents in, %d out:\n%s", once.Documents, n, once.YAML)
		}
		twice, err := Inject(once.YAML, "once.yaml", o)
		if err != nil {
			t.Fatalf("injected output does not inject: %v\n%s", err, once.YAML)
		}
		if !bytes.Equal(once.YAML, twice.YAML) {
			t.Fatalf("second injection changed the output:\n%s\n---- became ----\n%s", once.YAML, twice.YAML)
		}
		if !reflect.DeepEqual(once.Reports, twice.Reports) || once.Documents != twice.Documents || once.InjectedDocuments != twice.InjectedDocuments {
			t.Fatalf("second injection reports differently:\n%+v\n%+v", once, twice)
		}
	})
}
