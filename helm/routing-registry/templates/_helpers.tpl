{{/* Names, labels and small shared fragments of the routing-registry chart. */}}

{{- define "routing-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "routing-registry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "routing-registry.operatorName" -}}
{{- printf "%s-operator" (include "routing-registry.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "routing-registry.enginesName" -}}
{{- printf "%s-engines" (include "routing-registry.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "routing-registry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "routing-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: routing-registry
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component ("operator" or "engines"): pass (list $ "operator"). */}}
{{- define "routing-registry.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "routing-registry.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "routing-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "routing-registry.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "routing-registry.enginesServiceAccountName" -}}
{{- if .Values.engines.serviceAccount.create -}}
{{- default (include "routing-registry.enginesName" .) .Values.engines.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.engines.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches (a list), unless allNamespaces. */}}
{{- define "routing-registry.watchNamespaces" -}}
{{- $nss := .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $nss) -}}
{{- end -}}

{{- define "routing-registry.peeringName" -}}
{{- default (include "routing-registry.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "routing-registry.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The operator's rules inside one namespace (Role) or every namespace (ClusterRole). */}}
{{- define "routing-registry.namespacedRules" -}}
- apiGroups: ["routing.engines.io"]
  resources: ["routingentries"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/*
The operator's writes to entries (kopf's merge patches of finalizers and annotations; status).
Always cluster-wide: deleting a watched namespace deletes the Role there at the same time as
the entries, and the operator must still release their finalizers (see rbac.yaml).
*/}}
{{- define "routing-registry.entryWriteRules" -}}
- apiGroups: ["routing.engines.io"]
  resources: ["routingentries", "routingentries/status"]
  verbs: ["patch"]
{{- end -}}

{{/* "true" when an env list ([{name, ...}]) sets a variable: (list $envList "NAME"). */}}
{{- define "routing-registry.hasEnv" -}}
{{- $found := false -}}
{{- range (index . 0) -}}
{{- if eq .name (index $ 1) -}}{{- $found = true -}}{{- end -}}
{{- end -}}
{{- if $found -}}true{{- end -}}
{{- end -}}

{{/* Labels of a component's pods: its selector labels plus the stable ones (list $ "engines"). */}}
{{- define "routing-registry.podLabels" -}}
{{- $root := index . 0 -}}
{{ include "routing-registry.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: routing-registry
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
