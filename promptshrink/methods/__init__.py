"""Compression methods: one module per method, each registering its compressor with `@register`."""
