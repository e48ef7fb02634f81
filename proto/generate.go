// Package proto holds the destination and tap APIs. The generated code is
// committed; `make generate` (or `go generate ./proto`) rebuilds it with
// protoc (Debian protobuf-compiler) and the pinned protoc-gen-go and
// protoc-gen-go-grpc Go tools (go.mod's tool block).
package proto

//go:generate sh -c "protoc -I . -I /usr/include --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative net/net.proto destination/destination.proto tap/tap.proto emojivoto/emojivoto.proto"
