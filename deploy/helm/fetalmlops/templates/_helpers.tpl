{{/*
Names, labels, images, the environment every service shares, and the pod pieces every
workload repeats (security contexts, /tmp, probes). Component templates call these with a
dict: "root" (the top context), "component" (ingest, anonymizer, …) and "values" (its block).
*/}}

{{- define "fetalmlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fetalmlops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>": the name of a component's objects. */}}
{{- define "fetalmlops.componentName" -}}
{{- printf "%s-%s" (include "fetalmlops.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fetalmlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fetalmlops.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fetalmlops.labels" -}}
{{ include "fetalmlops.selectorLabels" . }}
app.kubernetes.io/part-of: fetalmlops
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* "<registry>/<repository>:<tag>" from a component's repository and tag. */}}
{{- define "fetalmlops.image" -}}
{{- $tag := .tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s/%s:%s" .root.Values.image.registry .repository $tag }}
{{- end }}

{{/* The default storage URI of the served version: s3://<bucket>/<model>/v<N>/. */}}
{{- define "fetalmlops.storageUri" -}}
{{- $model := .Values.inference.model }}
{{- $model.storageUri | default (printf "s3://%s/%s/v%v/" $model.bucket $model.name $model.version) }}
{{- end }}

{{- define "fetalmlops.inferenceName" -}}
{{- .Values.inference.name | default .Values.inference.model.name }}
{{- end }}

{{/*
The environment every FetalMLOps process gets: its name, where it listens, the platform it
runs on (Kafka, MinIO, the OTLP collector), the shared settings, its own settings. Secrets come
separately, through envFrom. The downward API's names come first: OTEL_RESOURCE_ATTRIBUTES
refers to them, and Kubernetes expands $(NAME) only for variables defined before it.
*/}}
{{- define "fetalmlops.env" -}}
{{- $root := .root }}
{{- $attributes := list "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" "k8s.pod.name=$(K8S_POD_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" }}
{{- range $key, $value := $root.Values.observability.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end -}}
- name: K8S_NAMESPACE_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
- name: FETALMLOPS_SERVICE_NAME
  value: {{ .service | quote }}
{{- if .httpPort }}
- name: FETALMLOPS_HTTP_HOST
  value: "0.0.0.0"
- name: FETALMLOPS_HTTP_PORT
  value: {{ .httpPort | quote }}
{{- end }}
- name: FETALMLOPS_BUS
  value: kafka
- name: FETALMLOPS_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $root.Values.kafka.bootstrapServers | quote }}
- name: FETALMLOPS_STORE
  value: minio
- name: FETALMLOPS_MINIO_ENDPOINT
  value: {{ $root.Values.minio.endpoint | quote }}
- name: FETALMLOPS_MINIO_SECURE
  value: {{ $root.Values.minio.secure | quote }}
{{- with $root.Values.observability.otlp.endpoint }}
- name: FETALMLOPS_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- /* No home directory in the images, and a read-only root: caches go to /tmp. */}}
- name: HOME
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- range $key, $value := $root.Values.config }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- range .extra }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- range $key, $value := .env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* A component's Secret, by reference: every key becomes a variable. */}}
{{- define "fetalmlops.envFrom" -}}
- secretRef:
    name: {{ . | quote }}
{{- end }}

{{- define "fetalmlops.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "fetalmlops.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* The /tmp emptyDir that a read-only root filesystem needs. */}}
{{- define "fetalmlops.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end }}

{{- define "fetalmlops.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* /healthz says the process answers, /readyz that its dependencies do (libs/common service.py). */}}
{{- define "fetalmlops.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* A serving container's wait before SIGTERM (`drainSeconds`). */}}
{{- define "fetalmlops.lifecycle" -}}
{{- if .Values.drainSeconds -}}
lifecycle:
  preStop:
    sleep: {seconds: {{ .Values.drainSeconds }}}
{{- end }}
{{- end }}

{{/* The change-control plan, when one is given: volume, mount and the variable naming it. */}}
{{- define "fetalmlops.planPath" -}}
/etc/fetalmlops/change-control/plan.yaml
{{- end }}

{{- define "fetalmlops.planVolume" -}}
{{- if .Values.changeControl.plan -}}
- name: change-control
  configMap:
    name: {{ include "fetalmlops.componentName" (dict "root" . "component" "change-control") }}
{{- end }}
{{- end }}

{{- define "fetalmlops.planMount" -}}
{{- if .Values.changeControl.plan -}}
- name: change-control
  mountPath: /etc/fetalmlops/change-control
  readOnly: true
{{- end }}
{{- end }}

{{/*
One NetworkPolicy egress rule to an endpoint given by value: its CIDRs and peers (neither:
any address) on its TCP ports.
*/}}
{{- define "fetalmlops.egressRule" -}}
- ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- if or .cidrs .peers }}
  to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
    {{- with .peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* DNS, Kafka, MinIO and PostgreSQL, and the OTLP collector when traces are exported. */}}
{{- define "fetalmlops.platformEgress" -}}
{{- $v := .Values -}}
- to: {{- toYaml $v.networkPolicy.dns.peers | nindent 4 }}
  ports:
    {{- range $v.networkPolicy.dns.ports }}
    - {protocol: UDP, port: {{ . }}}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{ include "fetalmlops.egressRule" $v.kafka }}
{{ include "fetalmlops.egressRule" $v.minio }}
{{ include "fetalmlops.egressRule" $v.postgresql }}
{{- if $v.observability.otlp.endpoint }}
{{ include "fetalmlops.egressRule" $v.observability.otlp }}
{{- end }}
{{- end }}

{{/* Ingress of the metrics scrapers on the http port. */}}
{{- define "fetalmlops.metricsIngress" -}}
- ports:
    - {protocol: TCP, port: http}
  {{- with .Values.observability.metricsFrom }}
  from: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
