// Command etcd is go.etcd.io/etcd's server, built from Go modules at the version kube-apiserver uses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
