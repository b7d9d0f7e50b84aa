// A Go net/http + k8s.io/api mutating webhook in the shape of this project's seed (its first
// design): the AdmissionReview decoded by apimachinery's universal deserializer, the pod
// unmarshalled into a typed corev1.Pod, the sidecar built from typed corev1 values and the
// RFC 6902 patch marshalled with encoding/json on every request. It injects what
// whisperer-injector injects for the same profile (container with env, resources,
// securityContext and mounts; volumes; hostAliases; the marker annotation), read from the
// same config file, so bench/webhook_peers.sh compares like with like.
//
//	go-webhook -listen 127.0.0.1:18446 -cert tls.crt -key tls.key -config config.yaml
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

// profile is the part of whisperer-injector's profile this webhook injects.
type profile struct {
	Image        string                       `json:"image"`
	Name         string                       `json:"containerName"`
	Args         []string                     `json:"args"`
	Env          []corev1.EnvVar              `json:"env"`
	Resources    *corev1.ResourceRequirements `json:"resources"`
	Security     *corev1.SecurityContext      `json:"securityContext"`
	VolumeMounts []corev1.VolumeMount         `json:"volumeMounts"`
	Volumes      []corev1.Volume              `json:"volumes"`
	HostAliases  []corev1.HostAlias           `json:"hostAliases"`
}

type config struct {
	DefaultProfile string             `json:"defaultProfile"`
	Profiles       map[string]profile `json:"profiles"`
}

type patchOp struct {
	Op    string      `json:"op"`
	Path  string      `json:"path"`
	Value interface{} `json:"value,omitempty"`
}

var (
	scheme       = runtime.NewScheme()
	deserializer = serializer.NewCodecFactory(scheme).UniversalDeserializer()
)

func init() {
	if err := admissionv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
}

type webhook struct {
	name    string
	profile profile
}

func (wh *webhook) sidecar() corev1.Container {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		field("WHISPERER_POD_NAME", "metadata.name"),
		field("WHISPERER_POD_NAMESPACE", "metadata.namespace"),
		{Name: "WHISPERER_PROFILE", Value: wh.name},
	}
	env = append(env, wh.profile.Env...)
	name := wh.profile.Name
	if name == "" {
		name = "whisperer"
	}
	return corev1.Container{
		Name:                     name,
		Image:                    wh.profile.Image,
		Args:                     wh.profile.Args,
		Env:                      env,
		Resources:                derefResources(wh.profile.Resources),
		SecurityContext:          wh.profile.Security,
		VolumeMounts:             wh.profile.VolumeMounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func derefResources(r *corev1.ResourceRequirements) corev1.ResourceRequirements {
	if r == nil {
		return corev1.ResourceRequirements{}
	}
	return *r
}

// patch is the injection for one pod, or nil when the pod does not opt in.
func (wh *webhook) patch(pod *corev1.Pod) ([]patchOp, error) {
	ann := pod.Annotations
	if ann["whisperer.dev/inject"] != "true" || ann["whisperer.dev/injected"] != "" {
		return nil, nil
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "whisperer" {
			return nil, nil
		}
	}
	c := wh.sidecar()
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	ops := []patchOp{{Op: "add", Path: "/spec/containers/-", Value: c}}
	if len(pod.Spec.HostAliases) == 0 {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/hostAliases", Value: wh.profile.HostAliases})
	} else {
		for _, a := range wh.profile.HostAliases {
			ops = append(ops, patchOp{Op: "add", Path: "/spec/hostAliases/-", Value: a})
		}
	}
	if len(pod.Spec.Volumes) == 0 {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/volumes", Value: wh.profile.Volumes})
	} else {
		for _, v := range wh.profile.Volumes {
			ops = append(ops, patchOp{Op: "add", Path: "/spec/volumes/-", Value: v})
		}
	}
	marker := fmt.Sprintf("profile=%s,hash=%s", wh.name, hex.EncodeToString(sum[:8]))
	if ann == nil {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations",
			Value: map[string]string{"whisperer.dev/injected": marker}})
	} else {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations/" +
			strings.ReplaceAll("whisperer.dev/injected", "/", "~1"), Value: marker})
	}
	return ops, nil
}

func (wh *webhook) mutate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	review := admissionv1.AdmissionReview{}
	if _, _, err := deserializer.Decode(body, nil, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if review.Request.Kind.Kind == "Pod" && review.Request.Operation == admissionv1.Create {
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		ops, err := wh.patch(&pod)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if ops != nil {
			raw, err := json.Marshal(ops)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch = raw
			resp.PatchType = &pt
		}
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	raw, err := json.Marshal(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "HTTPS address")
	cert := flag.String("cert", "tls.crt", "PEM certificate chain")
	key := flag.String("key", "tls.key", "PEM private key")
	cfgPath := flag.String("config", "config.yaml", "whisperer-injector config file (profiles)")
	flag.Parse()
	text, err := os.ReadFile(*cfgPath)
	if err != nil {
		log.Fatal(err)
	}
	var cfg config
	if err := yaml.Unmarshal(text, &cfg); err != nil {
		log.Fatalf("%s: %v", *cfgPath, err)
	}
	p, ok := cfg.Profiles[cfg.DefaultProfile]
	if !ok {
		log.Fatalf("%s: no profile %q", *cfgPath, cfg.DefaultProfile)
	}
	wh := &webhook{name: cfg.DefaultProfile, profile: p}
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", wh.mutate)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	log.Fatal(http.ListenAndServeTLS(*listen, *cert, *key, mux))
}
