{{/*
The chart name, or nameOverride.
*/}}
{{- define "tidings.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<chart>", or the release name alone when
it already contains the chart name. Kept to 50 characters so suffixes such as "-spreader-metrics" still fit.
*/}}
{{- define "tidings.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "tidings.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every resource carries.
*/}}
{{- define "tidings.labels" -}}
helm.sh/chart: {{ include "tidings.chart" . }}
{{ include "tidings.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tidings
{{- end }}

{{/*
Labels shared by all of the release's pods (never changed after install: selectors are immutable).
*/}}
{{- define "tidings.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidings.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's resources. Call with (dict "root" $ "component" "api").
*/}}
{{- define "tidings.componentLabels" -}}
{{ include "tidings.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component's pods. Call with (dict "root" $ "component" "api").
*/}}
{{- define "tidings.componentSelectorLabels" -}}
{{ include "tidings.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The ServiceAccount the Deployments run as.
*/}}
{{- define "tidings.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tidings.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount the migration Job runs as. A pre-install hook runs before the release's own ServiceAccount
exists, so when the chart creates one, the Job gets a hook-scoped copy of it instead.
*/}}
{{- define "tidings.migrationServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-migrate" (include "tidings.fullname" .) }}
{{- else }}
{{- include "tidings.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
The image reference: repository, then @digest when pinned, else :tag (the appVersion by default).
*/}}
{{- define "tidings.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
The Secret the processes read their secret settings from.
*/}}
{{- define "tidings.secretName" -}}
{{- default (include "tidings.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The public hub URL: config.hubUrl, else derived from the first Ingress host. Empty when neither is set.
*/}}
{{- define "tidings.hubUrl" -}}
{{- if .Values.config.hubUrl }}
{{- .Values.config.hubUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $scheme := "http" }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}
{{- $scheme = "https" }}
{{- end }}
{{- end }}
{{- printf "%s://%s/" $scheme $host }}
{{- end }}
{{- end }}

{{/*
Non-secret settings as a map of environment variables (the ConfigMap's data, and the migration Job's env).
*/}}
{{- define "tidings.configData" -}}
{{- $c := .Values.config -}}
TIDINGS_LOG_FORMAT: {{ $c.logFormat | quote }}
RUST_LOG: {{ $c.rustLog | quote }}
TIDINGS_DB_POOL_SIZE: {{ $c.dbPoolSize | int64 | toString | quote }}
TIDINGS_MIGRATE_ON_START: {{ not .Values.migration.enabled | toString | quote }}
TIDINGS_MAX_BODY_BYTES: {{ $c.maxBodyBytes | int64 | toString | quote }}
TIDINGS_CALLBACK_ALLOW_PRIVATE: {{ $c.callbackAllowPrivate | toString | quote }}
TIDINGS_TOPIC_ALLOW: {{ $c.topicAllow | quote }}
TIDINGS_FETCH_TIMEOUT_SECONDS: {{ $c.fetchTimeoutSeconds | toString | quote }}
TIDINGS_LEASE_DEFAULT_SECONDS: {{ $c.lease.defaultSeconds | int64 | toString | quote }}
TIDINGS_LEASE_MIN_SECONDS: {{ $c.lease.minSeconds | int64 | toString | quote }}
TIDINGS_LEASE_MAX_SECONDS: {{ $c.lease.maxSeconds | int64 | toString | quote }}
TIDINGS_RETRY_SCHEDULE: {{ $c.delivery.retrySchedule | quote }}
TIDINGS_DELIVERY_TIMEOUT_SECONDS: {{ $c.delivery.timeoutSeconds | toString | quote }}
TIDINGS_DELIVERY_CONCURRENCY: {{ $c.delivery.concurrency | int64 | toString | quote }}
TIDINGS_DELIVERY_HOST_CONCURRENCY: {{ $c.delivery.hostConcurrency | int64 | toString | quote }}
TIDINGS_DELIVERY_BATCH: {{ $c.delivery.batch | int64 | toString | quote }}
TIDINGS_RETRY_AFTER_MAX_SECONDS: {{ $c.delivery.retryAfterMaxSeconds | toString | quote }}
TIDINGS_SECRET_GRACE: {{ $c.delivery.secretGrace | quote }}
TIDINGS_DISABLE_AFTER: {{ $c.delivery.disableAfter | quote }}
TIDINGS_DISABLE_AFTER_DEAD: {{ $c.delivery.disableAfterDead | int64 | toString | quote }}
TIDINGS_SPREAD_BATCH: {{ $c.spreadBatch | int64 | toString | quote }}
TIDINGS_SPREAD_BATCH_JOBS: {{ $c.spreadBatchJobs | int64 | toString | quote }}
TIDINGS_PARTITION_INTERVAL: {{ $c.partitionInterval | quote }}
TIDINGS_RETENTION: {{ $c.retention | quote }}
{{- with $c.consoleSecureCookie }}
TIDINGS_CONSOLE_SECURE_COOKIE: {{ . | quote }}
{{- end }}
TIDINGS_SHUTDOWN_GRACE_SECONDS: {{ $c.shutdownGraceSeconds | toString | quote }}
{{- with include "tidings.hubUrl" . }}
TIDINGS_HUB_URL: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Secret settings as a map of environment variables (the chart-managed Secret's data before encoding). Unset
values are left out, so Tidings sees them as unset rather than empty.
*/}}
{{- define "tidings.secretData" -}}
{{- $s := .Values.secrets }}
{{- with $s.databaseUrl }}
DATABASE_URL: {{ . | quote }}
{{- end }}
{{- with $s.databaseReadUrl }}
DATABASE_READ_URL: {{ . | quote }}
{{- end }}
{{- with $s.adminToken }}
TIDINGS_ADMIN_TOKEN: {{ . | quote }}
{{- end }}
{{- with $s.publishTokens }}
TIDINGS_PUBLISH_TOKENS: {{ . | quote }}
{{- end }}
{{- with $s.publishHmacKey }}
TIDINGS_PUBLISH_HMAC_KEY: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Whether the processes have a database URL to read (chart-managed or existing Secret): "true" or "".
*/}}
{{- define "tidings.hasDatabaseUrl" -}}
{{- if or .Values.existingSecret .Values.secrets.databaseUrl }}true{{ end }}
{{- end }}

{{/*
`env` entries reading the secret settings from a Secret. Call with (dict "root" $ "secretName" NAME
"databaseOnly" BOOL). Every optional key is `optional: true`, so a Secret may leave it out.
*/}}
{{- define "tidings.secretEnv" -}}
{{- $root := .root }}
{{- $existing := $root.Values.existingSecret }}
{{- $keys := $root.Values.existingSecretKeys }}
{{- $s := $root.Values.secrets }}
{{- if include "tidings.hasDatabaseUrl" $root }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ ternary $keys.databaseUrl "DATABASE_URL" (not (empty $existing)) }}
{{- end }}
{{- if not .databaseOnly }}
{{- range $env, $field := dict "DATABASE_READ_URL" "databaseReadUrl" "TIDINGS_ADMIN_TOKEN" "adminToken" "TIDINGS_PUBLISH_TOKENS" "publishTokens" "TIDINGS_PUBLISH_HMAC_KEY" "publishHmacKey" }}
{{- if or $existing (get $s $field) }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tidings.secretName" $root }}
      key: {{ ternary (get $keys $field) $env (not (empty $existing)) }}
      optional: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Annotations that roll the pods when their configuration changes.
*/}}
{{- define "tidings.checksumAnnotations" -}}
checksum/config: {{ include "tidings.configData" . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include "tidings.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Prometheus scrape annotations for a pod whose metrics are on the given port. Call with (dict "root" $ "port" N).
*/}}
{{- define "tidings.prometheusAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | toString | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: Tidings' shutdown grace plus a margin, plus any preStop sleep.
Call with (dict "root" $ "preStop" SECONDS).
*/}}
{{- define "tidings.terminationGracePeriodSeconds" -}}
{{- add (int .root.Values.config.shutdownGraceSeconds) (int .root.Values.terminationGraceExtraSeconds) (int (.preStop | default 0)) }}
{{- end }}

{{/*
A Deployment of one Tidings process. Call with
  (dict "root" $ "component" "api" "values" .Values.api "command" (list ...) "port" N "portName" "http"
        "listenEnv" "TIDINGS_LISTEN" "preStop" SECONDS "autoscaled" BOOL)
*/}}
{{- define "tidings.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $ctx := dict "root" $root "component" .component }}
{{- $fullname := printf "%s-%s" (include "tidings.fullname" $root) .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tidings.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "tidings.componentSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      {{- /* Component annotations win over global ones, which win over the chart's own. */}}
      {{- $annotations := merge (deepCopy ($v.podAnnotations | default dict)) (deepCopy ($root.Values.podAnnotations | default dict)) (include "tidings.prometheusAnnotations" (dict "root" $root "port" .port) | fromYaml) (include "tidings.checksumAnnotations" $root | fromYaml) }}
      annotations:
        {{- toYaml $annotations | nindent 8 }}
      labels:
        {{- /* The chart's labels win: the Deployment's selector depends on them. */}}
        {{- merge (include "tidings.componentLabels" $ctx | fromYaml) (deepCopy ($root.Values.podLabels | default dict)) | toYaml | nindent 8 }}
    spec:
      serviceAccountName: {{ include "tidings.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "tidings.terminationGracePeriodSeconds" (dict "root" $root "preStop" .preStop) }}
      containers:
        - name: {{ .component }}
          image: {{ include "tidings.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
          env:
            - name: {{ .listenEnv }}
              value: {{ printf "%s:%v" $root.Values.listenAddress .port | quote }}
            {{- with include "tidings.secretEnv" (dict "root" $root "secretName" (include "tidings.secretName" $root)) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "tidings.fullname" $root }}
            {{- with $root.Values.extraEnvFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ .portName }}
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ .portName }}
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          {{- if .preStop }}
          lifecycle:
            preStop:
              exec:
                command: ["/bin/sleep", {{ .preStop | toString | quote }}]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with ($v.nodeSelector | default $root.Values.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with ($v.affinity | default $root.Values.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with ($v.tolerations | default $root.Values.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      {{- $constraints := list }}
      {{- range . }}
      {{- $c := deepCopy . }}
      {{- if not $c.labelSelector }}
      {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "tidings.componentSelectorLabels" $ctx | fromYaml)) }}
      {{- end }}
      {{- $constraints = append $constraints $c }}
      {{- end }}
      topologySpreadConstraints:
        {{- toYaml $constraints | nindent 8 }}
      {{- end }}
{{- end }}
