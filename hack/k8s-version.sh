# Sourced by hack/build-binaries.sh and hack/build-node-binaries.sh: the Kubernetes version both
# build (K8S_VERSION), and the version stamps a Kubernetes release build carries, for binaries
# built here from k8s.io/kubernetes.

K8S_VERSION="${K8S_VERSION:-v1.34.4}"

k8s_version_ldflags() {
  # What `kubectl version`, `/version` and `kubectl get nodes` report. Unstamped, a component
  # says v0.0.0 and a chart's kubeVersion constraint could never be checked against it.
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$pkg" "$K8S_VERSION" "$pkg" "$pkg" "$minor" "$pkg"
  done
}
