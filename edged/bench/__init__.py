"""`edged bench ...`: each benchmark measures edged beside a baseline from the same run.

One module per benchmark, named after its command: journal, relay, print_, scan,
import_ (a trailing underscore where Python reserves the name: a submodule named
`print` would shadow the builtin in this package's namespace).
"""
