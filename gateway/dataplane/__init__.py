"""The data plane: listener sockets, one task per connection (ClientHello, lookup, dial,
relay), TLS termination and re-encryption, the access log.

I/O, on Trio. It reads one snapshot per connection and never touches the store or the admin
stack. `clienthello` is pure (a sans-IO parser) and used only here.
"""
