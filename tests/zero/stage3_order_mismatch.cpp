// tests/zero/stage3_order_mismatch.cpp: data-dependent control flow under ZeRO stage 3. Two ranks
// train normally for two steps (so the order is recorded and prefetching is on), then rank r runs
// block r first. The job must end with the message naming the units and the ranks (the ctest
// entry matches it) instead of hanging in mismatched gathers.
#include <cstdio>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

using namespace zt;

int main(int argc, char** argv) {
  comm::Bootstrap::init(&argc, &argv);
  auto c = comm::make_mpi_communicator();
  zero::EngineSettings s;
  s.zero_stage = 3;
  s.micro_batch = 2;
  s.overlap_comm = true;
  s.scheduler = optim::make_constant_lr(1e-3);
  nn::GPT m(test::small_gpt());
  m.init_weights(1);
  zero::Engine e(m, s, c.get());
  io::TokenStream data = test::pattern_data();
  io::WindowSampler smp(data, 2, 16, 3, c->rank(), c->world());
  Tensor ids, tgt;
  for (int i = 0; i < 2; ++i) {
    smp.next(ids, tgt);
    e.forward(ids, tgt);
    e.backward();
    e.step();
  }
  const int unit = 1 + c->rank() % 2;  // block 0 on rank 0, block 1 on rank 1
  e.hooks().before_forward(0);
  e.hooks().after_forward(0);
  e.hooks().before_forward(unit);
  e.hooks().after_forward(unit);
  e.hooks().before_forward(3 - unit);
  e.hooks().after_forward(3 - unit);
  e.forward(ids, tgt);  // a whole new forward: blocking waits verify the checks
  e.backward();
  e.step();
  std::printf("no error: the mismatch went unnoticed\n");
  return 0;
}
