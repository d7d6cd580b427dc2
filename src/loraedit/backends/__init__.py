"""Model families behind one interface (`base.Family`) and the registry of backends.

`registry` maps a backend name (`model.backend`) to its spec and family package; `wan/` and
`hunyuan/` are the families. Only the registry imports a family, and never two families each other.
"""
