package e2e

import (
	"context"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestAPodsKubeconfigAuthenticatesAsItsServiceAccount(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), appPod("caller"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "caller", 30*time.Second, "Ready", isReady)
	env := processOf(t, pidOf(t, p.Status.PodIP))
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		t.Fatalf("the process's KUBECONFIG %q: %v", env["KUBECONFIG"], err)
	}
	review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "system:serviceaccount:" + ns + ":default"; review.Status.UserInfo.Username != want {
		t.Errorf("authenticated as %q, want %q", review.Status.UserInfo.Username, want)
	}
}

func TestAJobRunsToCompletion(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "once"},
		Spec: batchv1.JobSpec{Template: v1.PodTemplateSpec{Spec: v1.PodSpec{
			RestartPolicy: v1.RestartPolicyNever,
			Containers:    []v1.Container{{Name: "app", Image: appImage, Args: []string{"--exit-after=200ms", "--exit-code=0"}}},
		}}},
	}
	if _, err := client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		j, err := client.BatchV1().Jobs(ns).Get(ctx, "once", metav1.GetOptions{})
		return err == nil && j.Status.Succeeded == 1, nil
	})
	if err != nil {
		t.Fatalf("job did not succeed: %v", err)
	}
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=once"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != v1.PodSucceeded {
		t.Fatalf("job pods: %v %+v", err, pods)
	}
}
