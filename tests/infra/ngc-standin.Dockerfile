# A local stand-in for NVIDIA's PyTorch image (no registry is reachable from CI): Debian bookworm's
# Python 3.11 with torch 2.13.0+cpu, pytest, packaging, numpy and Jupyter's kernel and notebook
# runner (NGC images ship Jupyter), installed offline from wheels in
# the build context, plus a pip constraint file pinning torch as NGC images do (PIP_CONSTRAINT).
# No torchvision: PyPI's torchvision does not load beside torch 2.13.0+cpu. The stand-in spec
# (ngc-standin.toml) states exactly this.
FROM local/debian:bookworm-py
COPY wheels/ /tmp/wheels/
# Versions are those of the wheel folder make-ngc-standin.sh downloaded (--no-index: nothing else).
# hadolint ignore=DL3013
RUN python3 -m pip install --no-cache-dir --break-system-packages --no-index --find-links /tmp/wheels \
        torch==2.13.0+cpu pytest packaging numpy ipykernel nbclient nbformat matplotlib \
 && rm -rf /tmp/wheels \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && mkdir -p /etc/pip \
 && python3 -c "import torch; print(f'torch=={torch.__version__}')" > /etc/pip/constraint.txt
ENV PIP_CONSTRAINT=/etc/pip/constraint.txt \
    PIP_BREAK_SYSTEM_PACKAGES=1
