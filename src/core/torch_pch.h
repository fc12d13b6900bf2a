// Precompiled header: the LibTorch headers every runtime file needs.
#pragma once
#include <torch/torch.h>
