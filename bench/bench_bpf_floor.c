/* bench_bpf_floor.c - attaches an empty program to block_bio_queue until stdin closes, then prints
 * its runs and ns per run (bpf_stats must be on): the part of a program's measured time that is the
 * measurement itself. Usage: bench_bpf_floor < FIFO (cbt_bench.sh section 1b). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <unistd.h>

#include "bpf_floor.skel.h"

int main(void)
{
  struct bpf_floor *skel = bpf_floor__open_and_load();
  if (!skel || bpf_floor__attach(skel)) {
    fprintf(stderr, "bench_bpf_floor: cannot load or attach the empty program\n");
    bpf_floor__destroy(skel);
    return 1;
  }
  char c;
  while (read(0, &c, 1) > 0)
    ;
  struct bpf_prog_info info = {0};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(bpf_program__fd(skel->progs.bpf_floor), &info, &len)) {
    bpf_floor__destroy(skel);
    return 1;
  }
  printf("%llu %llu\n", (unsigned long long)info.run_cnt, (unsigned long long)info.run_time_ns);
  bpf_floor__destroy(skel);
  return 0;
}
