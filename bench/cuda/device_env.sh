# Sourced on a GPU machine from the repository root: points the dynamic linker at the libraries
# stage_device.sh carried ($DEVICE_DIR/lib, default .device_cuda/lib) and at a libcublasLt.so.13
# of the machine (CUDA toolkit or the nvidia-cublas wheel), and the tests at the fixtures.
DEVICE_DIR=${DEVICE_DIR:-.device_cuda}
export LD_LIBRARY_PATH="$PWD/$DEVICE_DIR/lib:${LD_LIBRARY_PATH:-}"
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
  $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
  if [[ -e "$dir/libcublasLt.so.13" ]]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$dir"; break; fi
done
export MISTRAL_FIXTURES_DIR="$PWD/tests/fixtures"
export NCCL_NVLS_ENABLE=0
