# Test helpers: rpl_unit_test (cmocka), rpl_integration_test (scripts/programs run as root against
# real loop devices and Azurite), rpl_fuzz_target (libFuzzer, bounded time, seed corpus in tree).
# Exit status 77 means "skipped" everywhere (SKIP_RETURN_CODE).
set(RPL_FUZZ_SECONDS 5 CACHE STRING "Seconds each fuzz target runs under CTest (a smoke run from the seed corpora in the suite; longer by hand)")

# rpl_unit_test(NAME SOURCES... [LIBS libs...])
function(rpl_unit_test NAME)
  cmake_parse_arguments(ARG "" "" "LIBS;ARGS" ${ARGN})
  add_executable(${NAME} ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${NAME} PRIVATE PkgConfig::CMOCKA ${ARG_LIBS})
  target_include_directories(${NAME} PRIVATE ${CMAKE_SOURCE_DIR}/include)
  add_test(NAME ${NAME} COMMAND ${NAME})
  set_tests_properties(${NAME} PROPERTIES LABELS unit SKIP_RETURN_CODE 77 TIMEOUT 300)
endfunction()

# rpl_integration_test(NAME COMMAND cmd args... [TIMEOUT s] [SECONDS s] [ASAN])
#   SECONDS: about how long it runs (release build, ctest -j3 on the 2-core CI machine). ctest -j3
#     starts the longest first (COST) so that no long test is left to run alone at the end; a fresh
#     clone has no Testing/Temporary/CTestCostData.txt to tell it.
#   ASAN: also label it `asan`: the sanitizer tree runs it (criterion in tests/CMakeLists.txt).
function(rpl_integration_test NAME)
  cmake_parse_arguments(ARG "ASAN" "TIMEOUT;SECONDS" "COMMAND" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set(labels integration)
  if(ARG_ASAN)
    list(APPEND labels asan)
  endif()
  add_test(NAME ${NAME} COMMAND ${ARG_COMMAND})
  set_tests_properties(${NAME} PROPERTIES LABELS "${labels}" SKIP_RETURN_CODE 77
    TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "RPL_BUILD_DIR=${CMAKE_BINARY_DIR};RPL_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  if(ARG_SECONDS)
    set_tests_properties(${NAME} PROPERTIES COST ${ARG_SECONDS})
  endif()
endfunction()

# rpl_fuzz_target(NAME SOURCE [LIBS libs...] [ARGS libFuzzer flags...]): corpus in tests/fuzz/corpus/NAME.
function(rpl_fuzz_target NAME SOURCE)
  if(NOT RPL_FUZZ)
    return()
  endif()
  cmake_parse_arguments(ARG "" "" "LIBS;ARGS" ${ARGN})
  add_executable(${NAME} ${SOURCE})
  target_compile_options(${NAME} PRIVATE -fsanitize=fuzzer)
  target_link_options(${NAME} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${NAME} PRIVATE ${ARG_LIBS})
  set(corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${NAME})
  set(work ${CMAKE_CURRENT_BINARY_DIR}/${NAME}-corpus)
  string(JOIN " " flags ${ARG_ARGS})
  # Fresh findings go to a scratch corpus in the build tree; the seed corpus is only read.
  add_test(NAME ${NAME}
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
            sh -c "rm -rf '${work}' && mkdir -p '${work}' && exec '$<TARGET_FILE:${NAME}>' -max_total_time=${RPL_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${flags} -artifact_prefix='${CMAKE_CURRENT_BINARY_DIR}/${NAME}-' '${work}' '${corpus}'")
  math(EXPR t "${RPL_FUZZ_SECONDS} + 120")
  set_tests_properties(${NAME} PROPERTIES LABELS fuzz TIMEOUT ${t} COST ${RPL_FUZZ_SECONDS})
endfunction()
