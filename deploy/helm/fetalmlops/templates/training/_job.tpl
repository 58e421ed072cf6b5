{{/*
The Job one training request becomes. The dispatcher reads it from its ConfigMap, names it,
puts the request in the container's environment, and creates it; everything else (image,
resources, GPUs, where it runs, how long, how often it is retried) is decided here, by values.
*/}}
{{- define "fetalmlops.trainingJob" -}}
{{- $t := .Values.training }}
{{- $job := $t.job }}
{{- $ctx := dict "root" . "component" "training-job" }}
{{- $env := deepCopy $t.env }}
{{- $_ := set $env "FETALMLOPS_TRAINER_WORKDIR" "/var/lib/fetalmlops/trainer" }}
{{- if .Values.changeControl.plan }}
{{- $_ := set $env "FETALMLOPS_TRAINER_PLAN" (include "fetalmlops.planPath" .) }}
{{- end }}
{{- $resources := deepCopy $job.resources }}
{{- if gt (int $job.gpus) 0 }}
{{- $limits := $resources.limits | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" (int $job.gpus) }}
{{- $_ := set $resources "limits" $limits }}
{{- end -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ include "fetalmlops.componentName" (dict "root" . "component" "train") }}-
  namespace: {{ .Release.Namespace }}
  labels: {{- include "fetalmlops.labels" $ctx | nindent 4 }}
spec:
  activeDeadlineSeconds: {{ $job.activeDeadlineSeconds }}
  backoffLimit: {{ $job.backoffLimit }}
  ttlSecondsAfterFinished: {{ $job.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "fetalmlops.selectorLabels" $ctx | nindent 8 }}
        {{- with $job.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $job.podAnnotations }}
      annotations: {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "fetalmlops.componentName" $ctx }}
      automountServiceAccountToken: false
      restartPolicy: Never
      securityContext: {{- include "fetalmlops.podSecurityContext" . | nindent 8 }}
      {{- with .Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      containers:
        - name: trainer
          image: {{ include "fetalmlops.image" (dict "root" . "repository" $t.repository "tag" $t.tag) | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: {{- toYaml $job.command | nindent 12 }}
          env:
            {{- include "fetalmlops.env" (dict "root" . "service" "trainer" "env" $env) | nindent 12 }}
          envFrom: {{- include "fetalmlops.envFrom" $t.existingSecret | nindent 12 }}
          resources: {{- toYaml $resources | nindent 12 }}
          securityContext: {{- include "fetalmlops.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            {{- include "fetalmlops.tmpMount" . | nindent 12 }}
            - {name: workdir, mountPath: /var/lib/fetalmlops/trainer}
            # PyTorch's data-loader workers pass batches through shared memory.
            - {name: dshm, mountPath: /dev/shm}
            {{- with include "fetalmlops.planMount" . }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "fetalmlops.tmpVolume" $job.tmpSizeLimit | nindent 8 }}
        - name: workdir
          {{- if $job.workdir.existingClaim }}
          persistentVolumeClaim: {claimName: {{ $job.workdir.existingClaim | quote }}}
          {{- else }}
          emptyDir: {sizeLimit: {{ $job.workdir.sizeLimit }}}
          {{- end }}
        - name: dshm
          emptyDir: {medium: Memory, sizeLimit: {{ $job.shmSizeLimit }}}
        {{- with include "fetalmlops.planVolume" . }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $job.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $job.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $job.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
