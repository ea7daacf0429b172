"""The kernel/userspace boundary as a process boundary (`vmmio serve`), in the role of /dev/vmm.

`protocol`: the wire format (control messages, run page, status codes; docs/transport.md). `server`: the
service, one process per connection. `client`: the Python client, whose `RemoteVcpu` has the in-process
`Vcpu`'s `run(entry) -> exit` API, and `RemoteMachine`. `fuzz`: hostile input against a server, checked
against an in-process reference (`python -m vmmio.service.fuzz --count N`).
"""
