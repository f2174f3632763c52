# bpf_skeleton(NAME SOURCE [DEPENDS...] [DEFINES MACRO...] [MCPU v2|v3]): compiles SOURCE (x.bpf.c)
# with clang for the BPF target (CO-RE, BTF; -mcpu=v3 by default, whose atomic or / fetch-add need
# kernel >= 5.12; v2 has only the add without fetch, so clang refuses any newer atomic in a variant
# for older kernels), with -DMACRO for each of DEFINES (one source, several variants), and generates NAME.skel.h with bpftool; defines an
# INTERFACE target NAME_skel that adds the directory holding the skeleton to the include path and
# carries the object file as a dependency.
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

function(bpf_skeleton NAME SOURCE)
  cmake_parse_arguments(ARG "" "MCPU" "DEFINES" ${ARGN})
  if(NOT ARG_MCPU)
    set(ARG_MCPU v3)
  endif()
  list(TRANSFORM ARG_DEFINES PREPEND "-D" OUTPUT_VARIABLE defines)
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/bpf)
  set(obj ${out_dir}/${NAME}.bpf.o)
  set(skel ${out_dir}/${NAME}.skel.h)
  get_filename_component(src_abs ${SOURCE} ABSOLUTE)
  get_filename_component(src_dir ${src_abs} DIRECTORY)
  file(MAKE_DIRECTORY ${out_dir})
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -mcpu=${ARG_MCPU} -D__TARGET_ARCH_x86 ${defines} -Wall -Werror
            -I${src_dir} -I${CMAKE_SOURCE_DIR}/include -idirafter /usr/include/x86_64-linux-gnu
            -c ${src_abs} -o ${obj}
    DEPENDS ${src_abs} ${ARG_UNPARSED_ARGUMENTS}
    IMPLICIT_DEPENDS C ${src_abs}
    COMMENT "BPF object ${NAME}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${NAME} > ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${NAME}.skel.h"
    VERBATIM)
  add_custom_target(${NAME}_skel_gen DEPENDS ${skel})
  add_library(${NAME}_skel INTERFACE)
  add_dependencies(${NAME}_skel ${NAME}_skel_gen)
  target_include_directories(${NAME}_skel INTERFACE ${out_dir})
  target_link_libraries(${NAME}_skel INTERFACE PkgConfig::LIBBPF)
  set(${NAME}_BPF_OBJECT ${obj} PARENT_SCOPE)
endfunction()
