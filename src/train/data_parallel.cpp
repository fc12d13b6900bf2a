#include "train/data_parallel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "core/error.h"
#include "core/runtime.h"
#include "core/torch_pch.h"

namespace frozenlm {

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
};

namespace {

std::string env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

int env_int(const char* k, int lo, int hi, const std::string& why) {
  const std::string v = env(k);
  if (v.empty()) throw Error("data parallel: " + std::string(k) + " is not set (" + why + ")");
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    throw Error("data parallel: " + std::string(k) + "='" + v + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int(x);
}

// Adds the wall time of its scope to a counter.
struct Timed {
  double& total;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit Timed(double& t) : total(t) {}
  ~Timed() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};

std::string what_of(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace

DataParallel::~DataParallel() = default;

int DataParallel::threads_per_local_rank() {
  if (const int n = threads_from_environment()) return n;  // torchrun sets OMP_NUM_THREADS=1 for several local ranks
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string lws = env("LOCAL_WORLD_SIZE");
  const int local = lws.empty() ? 1 : std::max(1, std::atoi(lws.c_str()));
  return std::max(1, cores / local);
}

std::unique_ptr<DataParallel> DataParallel::from_environment(const std::string& device) {
  const std::string ws = env("WORLD_SIZE");
  if (ws.empty() || ws == "1") return nullptr;
  std::unique_ptr<DataParallel> dp(new DataParallel());
  dp->world_ = env_int("WORLD_SIZE", 1, 1 << 16, "the number of ranks");
  dp->rank_ = env_int("RANK", 0, dp->world_ - 1, "this process's rank, 0 to WORLD_SIZE - 1");
  const std::string addr = env("MASTER_ADDR");
  if (addr.empty()) throw Error("data parallel: MASTER_ADDR is not set (the host of rank 0)");
  const int port = env_int("MASTER_PORT", 1, 65535, "rank 0's rendezvous port");
  if (!env("FROZENLM_DIST_TIMEOUT_S").empty()) dp->timeout_s_ = env_int("FROZENLM_DIST_TIMEOUT_S", 1, 86400, "seconds");
  const auto timeout = std::chrono::milliseconds(int64_t(dp->timeout_s_ * 1000));
  if (device.rfind("cuda", 0) == 0)
    throw Error("data parallel on CUDA needs NCCL, which this build does not include (train on --device cpu, or build against a "
                "CUDA LibTorch with NCCL)");
  dp->g_ = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions o;
    o.port = uint16_t(port);
    o.isServer = dp->rank_ == 0;
    o.numWorkers = size_t(dp->world_);
    o.waitWorkers = true;
    o.timeout = timeout;
    dp->g_->store = c10::make_intrusive<c10d::TCPStore>(addr, o);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const std::string ifname = env("GLOO_SOCKET_IFNAME");
    if (!ifname.empty())
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (addr == "localhost" || addr.rfind("127.", 0) == 0)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    dp->g_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(dp->g_->store, dp->rank_, dp->world_, opts);
  } catch (const std::exception& e) {
    throw Error("data parallel: rank " + std::to_string(dp->rank_) + " of " + std::to_string(dp->world_) + " could not join the group at " +
                addr + ":" + std::to_string(port) + " within " + std::to_string(int(dp->timeout_s_)) + " s: " + what_of(e));
  }
  return dp;
}

void DataParallel::fail(const std::string& op, const std::exception& e) const {
  throw Error("data parallel (rank " + std::to_string(rank_) + " of " + std::to_string(world_) + "): " + op +
              " failed — another rank exited, crashed or did not answer within " + std::to_string(int(timeout_s_)) +
              " s (FROZENLM_DIST_TIMEOUT_S): " + what_of(e));
}

void DataParallel::all_reduce_sum(std::vector<at::Tensor>& tensors) const {
  if (tensors.empty()) return;
  std::vector<at::Tensor> flat_parts;
  for (auto& t : tensors) flat_parts.push_back(t.reshape({-1}).to(at::kFloat));
  std::vector<at::Tensor> buf{at::cat(flat_parts)};
  all_reduce_raw(buf, "all-reduce");
  int64_t off = 0;
  for (auto& t : tensors) {
    t.copy_(buf[0].narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
}

double DataParallel::sum(double x) const {
  std::vector<at::Tensor> t{at::full({1}, x, at::kDouble)};
  all_reduce_raw(t, "all-reduce");
  return t[0].item<double>();
}

void DataParallel::broadcast_from_main(std::vector<at::Tensor>& tensors) const {
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    broadcast_raw(one);
  }
}

void DataParallel::all_reduce_raw(std::vector<at::Tensor>& t, const char* op) const {
  Timed timed(collective_s_);
  try {
    g_->pg->allreduce(t)->wait();
  } catch (const std::exception& e) {
    fail(op, e);
  }
}

void DataParallel::broadcast_raw(std::vector<at::Tensor>& t) const {
  Timed timed(collective_s_);
  try {
    g_->pg->broadcast(t)->wait();
  } catch (const std::exception& e) {
    fail("broadcast", e);
  }
}

// Each rank writes its rows into its own slot of a zero buffer; the sum over ranks is then every rank's rows (x + 0 is
// exact), in rank order.
at::Tensor DataParallel::gather_rows(const at::Tensor& mine, std::vector<int64_t>* counts) const {
  if (mine.dim() < 1) throw Error("data parallel: all_gather_rows needs a tensor with a row dimension");
  std::vector<at::Tensor> n{at::zeros({world_}, at::kLong)};
  n[0][rank_] = mine.size(0);
  all_reduce_raw(n, "all-gather (sizes)");
  counts->assign(n[0].data_ptr<int64_t>(), n[0].data_ptr<int64_t>() + world_);
  int64_t total = 0, offset = 0;
  for (int r = 0; r < world_; ++r) (r < rank_ ? offset : total) += (*counts)[size_t(r)];
  total += offset;
  std::vector<int64_t> shape = mine.sizes().vec();
  shape[0] = total;
  std::vector<at::Tensor> buf{at::zeros(shape, mine.options())};
  if (total == 0) return buf[0];
  buf[0].narrow(0, offset, mine.size(0)).copy_(mine);
  all_reduce_raw(buf, "all-gather");
  return buf[0];
}

at::Tensor DataParallel::all_gather_rows(const at::Tensor& mine) const {
  std::vector<int64_t> counts;
  return gather_rows(mine.contiguous(), &counts);
}

std::vector<std::string> DataParallel::all_gather_text(const std::string& mine) const {
  at::Tensor bytes = at::empty({int64_t(mine.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  std::vector<int64_t> counts;
  const at::Tensor all = gather_rows(bytes, &counts);
  std::vector<std::string> out;
  int64_t off = 0;
  for (int64_t c : counts) {
    out.emplace_back(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + off, size_t(c));
    off += c;
  }
  return out;
}

void DataParallel::broadcast_text(std::string& text) const {
  std::vector<at::Tensor> n{at::full({1}, int64_t(text.size()), at::kLong)};
  broadcast_raw(n);
  const int64_t len = n[0].item<int64_t>();
  if (len == 0) {
    text.clear();
    return;
  }
  std::vector<at::Tensor> bytes{at::zeros({len}, at::kByte)};
  if (rank_ == 0) std::memcpy(bytes[0].data_ptr(), text.data(), text.size());
  broadcast_raw(bytes);
  text.assign(reinterpret_cast<const char*>(bytes[0].data_ptr<uint8_t>()), size_t(len));
}

void DataParallel::check_same(double step, double checksum, const std::string& what) const {
  std::vector<at::Tensor> mine{at::tensor({step, checksum}, at::kDouble)};
  at::Tensor main = mine[0].clone();
  std::vector<at::Tensor> b{main};
  broadcast_raw(b);
  const double differs = mine[0].equal(main) ? 0 : 1;
  const double n = sum(differs);
  if (n > 0)
    throw Error("data parallel (rank " + std::to_string(rank_) + "): " + std::to_string(int(n)) + " rank(s) do not hold rank 0's " + what +
                " (rank 0: step " + std::to_string(int64_t(main[0].item<double>())) + ", this rank: step " + std::to_string(int64_t(step)) +
                "): every rank must read the same output directory (a shared filesystem)");
}

// ---- the local launcher ----

namespace {

std::vector<pid_t> g_children;

void forward_signal(int sig) {
  for (pid_t p : g_children)
    if (p > 0) ::kill(p, sig);  // never kill(-1, ...): that signals every process we may signal
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("--nproc: cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw Error("--nproc: cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string status_text(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  return "stopped";
}

}  // namespace

int launch_local_ranks(int argc, char** argv, int nproc) {
  if (nproc < 1 || nproc > 256) throw Error("--nproc must be in [1, 256], got " + std::to_string(nproc));
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") { ++i; continue; }
    if (a.rfind("--nproc=", 0) == 0) continue;
    args.push_back(a);
  }
  const std::string port = std::to_string(free_port());
  std::fprintf(stderr, "[train] starting %d ranks on 127.0.0.1:%s\n", nproc, port.c_str());
  std::fflush(stderr);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) throw Error("--nproc: fork failed: " + std::string(std::strerror(errno)));
    if (pid == 0) {
      const std::string rs = std::to_string(r), ws = std::to_string(nproc);
      ::setenv("RANK", rs.c_str(), 1);
      ::setenv("LOCAL_RANK", rs.c_str(), 1);
      ::setenv("WORLD_SIZE", ws.c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", ws.c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(const_cast<char*>(a.c_str()));
      cargs.push_back(nullptr);
      ::execv("/proc/self/exe", cargs.data());
      std::fprintf(stderr, "frozenlm: error: --nproc: cannot run %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    g_children.push_back(pid);
  }
  struct sigaction sa{};
  sa.sa_handler = forward_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  int failed_rank = -1, failed_status = 0;
  size_t alive = g_children.size();
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (alive > 0) {
    int st = 0;
    const pid_t p = ::waitpid(-1, &st, WNOHANG);
    if (p == 0) {
      if (std::chrono::steady_clock::now() > deadline) {  // the others did not stop on SIGTERM
        for (pid_t c : g_children) if (c > 0) ::kill(c, SIGKILL);
        deadline = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (p < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const int r = int(std::find(g_children.begin(), g_children.end(), p) - g_children.begin());
    if (r >= int(g_children.size())) continue;
    g_children[r] = -1;
    --alive;
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok && failed_rank < 0) {
      failed_rank = r;
      failed_status = st;
      std::fprintf(stderr, "[train] rank %d %s: stopping the other ranks\n", r, status_text(st).c_str());
      for (pid_t c : g_children) if (c > 0) ::kill(c, SIGTERM);
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
  }
  g_children.clear();
  if (failed_rank >= 0) {
    std::fprintf(stderr, "frozenlm: error: --nproc %d: rank %d %s\n", nproc, failed_rank, status_text(failed_status).c_str());
    return 1;
  }
  return 0;
}

}  // namespace frozenlm
