{{/*
The objects every long-running service is made of: ServiceAccount, Deployment, Service,
PodDisruptionBudget and, where it fits, a HorizontalPodAutoscaler. Called with a dict:
  root        the top context
  component   ingest, anonymizer, monitor, training-dispatcher
  service     FETALMLOPS_SERVICE_NAME (names it in logs, traces and metrics)
  values      the component's values block
  repository, tag, command   its image and command (command empty: the image's entry point)
  existingSecret             its Secret, by reference
  env         its own non-secret settings (a map)
  extraEnv    more variables (a list of EnvVar)
  ports       extra container ports beyond http (a list of ContainerPort)
  servicePorts extra Service ports beyond http (a list of ServicePort)
  volumes, volumeMounts      extra ones (lists)
  automountToken             mount the ServiceAccount's token (only the dispatcher does)
  checksum    a string whose change rolls the pods (mounted ConfigMaps)
*/}}

{{- define "fetalmlops.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "fetalmlops.componentName" . }}
  labels: {{- include "fetalmlops.labels" . | nindent 4 }}
  {{- with .values.serviceAccount.annotations }}
  annotations: {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .automountToken | default false }}
{{- end }}

{{- define "fetalmlops.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fetalmlops.componentName" . }}
  labels: {{- include "fetalmlops.labels" . | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels: {{- include "fetalmlops.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fetalmlops.selectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ printf "%s%s" (toJson .env) (.checksum | default "") | sha256sum | trunc 16 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "fetalmlops.componentName" . }}
      automountServiceAccountToken: {{ .automountToken | default false }}
      securityContext: {{- include "fetalmlops.podSecurityContext" $root | nindent 8 }}
      # Consumers finish the message in hand and leave their group on SIGTERM.
      terminationGracePeriodSeconds: 60
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      containers:
        - name: {{ .service }}
          image: {{ include "fetalmlops.image" (dict "root" $root "repository" .repository "tag" .tag) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- with .command }}
          command: {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - {name: http, containerPort: {{ $v.httpPort }}, protocol: TCP}
            {{- range .ports }}
            - {{ toJson . }}
            {{- end }}
          env:
            {{- include "fetalmlops.env" (dict "root" $root "service" .service "httpPort" $v.httpPort "env" .env "extra" .extraEnv) | nindent 12 }}
          envFrom: {{- include "fetalmlops.envFrom" .existingSecret | nindent 12 }}
          {{- include "fetalmlops.probes" . | nindent 10 }}
          {{- include "fetalmlops.lifecycle" $root | nindent 10 }}
          resources: {{- toYaml $v.resources | nindent 12 }}
          securityContext: {{- include "fetalmlops.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            {{- include "fetalmlops.tmpMount" . | nindent 12 }}
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "fetalmlops.tmpVolume" $v.tmpSizeLimit | nindent 8 }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{- define "fetalmlops.service" -}}
{{- $v := .values }}
{{- $svc := $v.service | default dict }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "fetalmlops.componentName" . }}
  labels: {{- include "fetalmlops.labels" . | nindent 4 }}
  {{- with $svc.annotations }}
  annotations: {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.type | default "ClusterIP" }}
  selector: {{- include "fetalmlops.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $svc.port | default $v.httpPort }}
      targetPort: http
      protocol: TCP
      {{- if and (eq ($svc.type | default "ClusterIP") "NodePort") (dig "nodePorts" "http" nil $svc) }}
      nodePort: {{ $svc.nodePorts.http }}
      {{- end }}
    {{- range .servicePorts }}
    - {{ toJson . }}
    {{- end }}
{{- end }}

{{- define "fetalmlops.podDisruptionBudget" -}}
{{- if .values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "fetalmlops.componentName" . }}
  labels: {{- include "fetalmlops.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels: {{- include "fetalmlops.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "fetalmlops.horizontalPodAutoscaler" -}}
{{- $a := .values.autoscaling }}
{{- if $a.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "fetalmlops.componentName" . }}
  labels: {{- include "fetalmlops.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "fetalmlops.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/* Everything at once, separated as documents. */}}
{{- define "fetalmlops.workload" -}}
{{ include "fetalmlops.serviceAccount" . }}
---
{{ include "fetalmlops.deployment" . }}
---
{{ include "fetalmlops.service" . }}
{{- with (include "fetalmlops.podDisruptionBudget" .) }}
---
{{ . }}
{{- end }}
{{- if hasKey .values "autoscaling" }}
{{- with (include "fetalmlops.horizontalPodAutoscaler" .) }}
---
{{ . }}
{{- end }}
{{- end }}
{{- end }}
