// The child side of the clone: what a new worker runs between clone3 and execve. Only
// async-signal-safe calls happen here (the helper is single-threaded, but the child shares its
// memory image and must not allocate or take locks); everything it needs was prepared by the
// helper before the clone. A failure is written to the error pipe as a ChildError, naming the
// step, before the child exits.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>

#include "ember/sandbox/spawner.h"
#include "helper_wire.h"

namespace ember::sandbox::child {

// Why a child failed before execve; written to the error pipe.
struct ChildError {
  int32_t error;
  int32_t step;
  int32_t op;
};

enum Step : int32_t {
  kStepSync,
  kStepMountPrivate,
  kStepRootTmpfs,
  kStepOp,
  kStepPivotRoot,
  kStepRootReadOnly,
  kStepHostname,
  kStepDescriptors,
  kStepChdir,
  kStepRlimit,
  kStepIdentity,
  kStepCapabilities,
  kStepDeathSignal,
  kStepNoNewPrivs,
  kStepSeccomp,
  kStepExecve,
};

// The step as the daemon reports it.
const char* step_name(int32_t step);
// The root-plan operation as the daemon reports it.
const char* op_name(uint32_t kind);

// The child's own descriptor for its lifeline (the helper's socket, whose peer only the daemon
// holds), between close_range and the last check of the daemon.
constexpr int kLifelineFd = 5;

// Sets up the sandbox described by `p` and executes the worker, or for a zygote's child runs
// `entry->run` in its place; never returns. Async-signal-safe up to that last step.
[[noreturn]] void exec_child(const wire::Prepared& p, int error_fd, int sync_fd, int lifeline,
                             pid_t daemon_pid, const Confinement& confinement,
                             const sock_fprog* filter, const ChildEntry* entry);

}  // namespace ember::sandbox::child
