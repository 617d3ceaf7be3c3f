"""The one TorchServe harness: start, stop and talk to a torchserve, and build its .mar files.

`make serve`, `make stop`, the e2e tests, the benchmarks, the image test and the online loop
all use it (`python -m serve --help`). Modules:
    config   config.properties, loopback ports that are free
    client   tokens, HTTP with a token, the management API
    metrics  one /metrics scrape, parsed by prometheus_client
    server   start (one path for every caller), wait for READY, stop
    archive  build_mar: model_archives/<name>/ + artifacts/<name>/ -> <name>.mar
    inprocess  a .mar's handler loaded in this process as a TorchServe worker loads it
    predict  `make predict`: a .mar's answer to a request file, no server
    kserve_server  the same .mar handlers under KServe's ModelServer (`make serve-kserve`)
"""
