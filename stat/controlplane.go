package stat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"meshtls/contract"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PrometheusComponent is the control-plane component label value of the
// Prometheus `linkerd install` deploys.
const PrometheusComponent = "prometheus"

// defaultPrometheusPort is used when the pod names no container port.
const defaultPrometheusPort = 9090

// ControlPlanePrometheus is the control plane's Prometheus, reached on a
// local port forwarded through the API server.
type ControlPlanePrometheus struct {
	// URL is the local end of the port-forward.
	URL string
	// Pod is "namespace/name" of the Prometheus pod.
	Pod  string
	stop chan struct{}
	done chan struct{}
}

// Close ends the port-forward.
func (c *ControlPlanePrometheus) Close() {
	close(c.stop)
	<-c.done
}

// ConnectControlPlanePrometheus finds the Prometheus of the control plane
// in namespace ns (a running pod labelled
// linkerd.io/control-plane-component=prometheus), forwards a local port to
// it through the API server, as kubectl port-forward does, and checks that
// Prometheus answers there. It works on any cluster the kubeconfig
// reaches, with no route to pod IPs.
func ConnectControlPlanePrometheus(ctx context.Context, cfg *rest.Config, client kubernetes.Interface, ns string) (*ControlPlanePrometheus, error) {
	pod, port, err := findPrometheusPod(ctx, client, ns)
	if err != nil {
		return nil, err
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	url := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut strings.Builder
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(done)
		if err := fw.ForwardPorts(); err != nil {
			failed <- err
		}
	}()
	name := pod.Namespace + "/" + pod.Name
	select {
	case <-ready:
	case err := <-failed:
		return nil, &PortForwardError{Pod: name, Err: err}
	case <-ctx.Done():
		close(stop)
		<-done
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		close(stop)
		<-done
		return nil, fmt.Errorf("port-forward to %s: no local port: %v", name, err)
	}
	c := &ControlPlanePrometheus{URL: fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local), Pod: name, stop: stop, done: done}
	if err := probePrometheus(ctx, c.URL); err != nil {
		c.Close()
		if msg := strings.TrimSpace(errOut.String()); msg != "" {
			err = fmt.Errorf("%v (%s)", err, msg)
		}
		return nil, &PortForwardError{Pod: name, Err: err}
	}
	return c, nil
}

// PortForwardError is a Prometheus pod that exists but could not be
// reached through a port-forward.
type PortForwardError struct {
	Pod string
	Err error
}

func (e *PortForwardError) Error() string {
	return fmt.Sprintf("port-forward to Prometheus pod %s: %v", e.Pod, e.Err)
}

func (e *PortForwardError) Unwrap() error { return e.Err }

// Unsupported says whether the node refused the port-forward outright
// (its kubelet has no port-forward endpoint), as opposed to a Prometheus
// that did not answer.
func (e *PortForwardError) Unsupported() bool {
	// What the API server relays when the kubelet has no such endpoint:
	// its 404 (or a 501) to the upgrade request.
	msg := strings.ToLower(e.Err.Error())
	for _, s := range []string{"404 page not found", "not implemented", "not supported", "501"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// ErrNoPrometheus means the control plane has no Prometheus pod running.
var ErrNoPrometheus = errors.New("no running Prometheus")

func findPrometheusPod(ctx context.Context, client kubernetes.Interface, ns string) (*corev1.Pod, int, error) {
	sel := labels.Set{contract.ComponentLabel: PrometheusComponent}.String()
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, 0, fmt.Errorf("cannot list pods in %s: %v", ns, err)
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		port := defaultPrometheusPort
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == "admin-http" || c.Name == "prometheus" {
					port = int(cp.ContainerPort)
				}
			}
		}
		return p, port, nil
	}
	return nil, 0, fmt.Errorf("%w in namespace %s (no running pod labelled %s)", ErrNoPrometheus, ns, sel)
}

// probePrometheus asks Prometheus for its build information, which any
// version answers quickly once it serves queries.
func probePrometheus(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/status/buildinfo", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("Prometheus does not answer: %v", rootCause(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Prometheus answers %s", resp.Status)
	}
	return nil
}
