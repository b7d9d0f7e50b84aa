{{/*
Labels on every object: the two the kustomize manifests carry, plus Helm's own.
*/}}
{{- define "whisperer.labels" -}}
app.kubernetes.io/name: whisperer-injector
app.kubernetes.io/part-of: whisperer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Labels of the webhook configuration (component webhook instead of part-of, as webhook.yaml).
*/}}
{{- define "whisperer.webhookLabels" -}}
app.kubernetes.io/name: whisperer-injector
app.kubernetes.io/component: webhook
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
The pod selector: never includes Helm labels (a Deployment's selector cannot change).
*/}}
{{- define "whisperer.selector" -}}
app.kubernetes.io/name: whisperer-injector
{{- end -}}

{{- define "whisperer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
tls.mode, checked: one of selfManaged, certManager, provided.
*/}}
{{- define "whisperer.tlsMode" -}}
{{- $mode := .Values.tls.mode -}}
{{- if not (has $mode (list "selfManaged" "certManager" "provided")) -}}
{{- fail (printf "tls.mode must be selfManaged, certManager or provided, not %q" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/*
The Secret the injector serves from: the fixed name unless a provided one is named.
*/}}
{{- define "whisperer.tlsSecret" -}}
{{- if eq (include "whisperer.tlsMode" .) "provided" -}}
{{- required "tls.provided.secretName is required with tls.mode=provided" .Values.tls.provided.secretName -}}
{{- else -}}
whisperer-injector-tls
{{- end -}}
{{- end -}}

{{/*
The config file (ConfigMap whisperer-injector-config), from the values.
*/}}
{{- define "whisperer.config" -}}
{{- $cfg := dict "defaultProfile" .Values.defaultProfile "namespaces" .Values.namespaces "profiles" .Values.profiles -}}
{{- if not (hasKey .Values.profiles .Values.defaultProfile) -}}
{{- fail (printf "defaultProfile %q is not one of profiles (%s)" .Values.defaultProfile (keys .Values.profiles | sortAlpha | join ", ")) -}}
{{- end -}}
{{- toYaml (merge $cfg .Values.extraConfig) -}}
{{- end -}}

{{/*
Images and added capabilities of every profile, plus the extra ones: the guard's params.
One entry a line, sorted, no duplicates.
*/}}
{{- define "whisperer.guardImages" -}}
{{- $images := .Values.injectorGuard.extraAllowedImages | default list -}}
{{- range $name, $p := .Values.profiles -}}
{{- $images = append $images (required (printf "profiles.%s.image is required" $name) $p.image) -}}
{{- end -}}
{{- $images | uniq | sortAlpha | join "\n" -}}
{{- end -}}

{{- define "whisperer.guardCapabilities" -}}
{{- $caps := .Values.injectorGuard.extraAllowedCapabilities | default list -}}
{{- range $name, $p := .Values.profiles -}}
{{- with $p.securityContext -}}{{- with .capabilities -}}{{- with .add -}}
{{- $caps = concat $caps . -}}
{{- end -}}{{- end -}}{{- end -}}
{{- end -}}
{{- $caps | uniq | sortAlpha | join "\n" -}}
{{- end -}}

{{/*
clientConfig of both webhooks: the Service, and the caBundle only with tls.mode=provided.
*/}}
{{- define "whisperer.clientConfig" -}}
clientConfig:
  {{- if eq .mode "provided" }}
  caBundle: {{ required "tls.provided.caBundle (base64 PEM of the CA that signed the Secret's tls.crt) is required with tls.mode=provided" .ctx.Values.tls.provided.caBundle | quote }}
  {{- end }}
  service:
    name: whisperer-injector
    namespace: {{ .ctx.Release.Namespace }}
    path: /mutate
    port: 443
{{- end -}}
