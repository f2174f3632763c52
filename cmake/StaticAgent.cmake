# StaticAgent.cmake - lets mobility-agent link as one static binary (glibc, OpenSSL, libbpf, ...) while every other program and test keeps the shared libraries.
#
# The agent runs on the source servers of a migration (RHEL 8/9, SLES 15, Ubuntu 20.04-24.04,
# Debian 11-12, Amazon Linux 2), whose glibc and OpenSSL are older than the build machine's; a
# static binary needs nothing of theirs. The libraries of rpl_proto, rpl_agent_core and
# rpl_agent_cbt are chosen by the program being linked: a target with the property RPL_STATIC_LINK
# gets the pkg-config --static archives (lib*.a, with their own dependencies such as libelf and
# zlib), every other target the shared libraries, as before. Sanitizers do not link statically, so
# the ASan/fuzz tree keeps a dynamic agent.
if(RPL_SANITIZE OR RPL_FUZZ)
  set(_rpl_static_default OFF)
else()
  set(_rpl_static_default ON)
endif()
option(RPL_STATIC_AGENT "Link mobility-agent statically (not with sanitizers)" ${_rpl_static_default})
if(RPL_STATIC_AGENT AND RPL_SANITIZE)
  message(FATAL_ERROR "RPL_STATIC_AGENT cannot be combined with RPL_SANITIZE: ASan needs the dynamic loader")
endif()

# The pkg-config modules the agent's libraries link (CMakeLists.txt's pkg_check_modules prefixes).
set(_rpl_agent_pkgs URING ZSTD OPENSSL UUID LIBBPF XXHASH)
set(_rpl_static "$<BOOL:$<TARGET_PROPERTY:RPL_STATIC_LINK>>")
foreach(pkg ${_rpl_agent_pkgs})
  set(archives "")
  foreach(name ${${pkg}_STATIC_LIBRARIES})
    find_library(RPL_STATIC_LIB_${name} NAMES lib${name}.a HINTS ${${pkg}_STATIC_LIBRARY_DIRS})
    if(NOT RPL_STATIC_LIB_${name})
      if(RPL_STATIC_AGENT)
        message(FATAL_ERROR "lib${name}.a (for ${pkg}) is missing: the static agent needs the -dev "
                            "package's archive (scripts/setup.sh), or configure with -DRPL_STATIC_AGENT=OFF")
      endif()
      continue()
    endif()
    list(APPEND archives ${RPL_STATIC_LIB_${name}})
  endforeach()
  # Each item is either the shared or the static library, by the linked program's RPL_STATIC_LINK
  # (cmake/DependencyRules.cmake's rpl_check_links follows both).
  get_target_property(shared PkgConfig::${pkg} INTERFACE_LINK_LIBRARIES)
  set(items "")
  foreach(l ${shared})
    list(APPEND items "$<$<NOT:${_rpl_static}>:${l}>")
  endforeach()
  foreach(l ${archives})
    list(APPEND items "$<${_rpl_static}:${l}>")
  endforeach()
  set_property(TARGET PkgConfig::${pkg} PROPERTY INTERFACE_LINK_LIBRARIES "${items}")
endforeach()

# rpl_static_program(TARGET): links TARGET statically (-static-pie: ASLR stays) when RPL_STATIC_AGENT
# is on. The linker then warns that getaddrinfo, gethostbyname (libcrypto's BIO) and dlopen
# (libcrypto's DSO) need the build's glibc at run time: agent/main.c limits host lookups to the
# built-in files and dns sources and loads no OpenSSL configuration, so none of them loads a module.
function(rpl_static_program T)
  if(NOT RPL_STATIC_AGENT)
    return()
  endif()
  set_target_properties(${T} PROPERTIES RPL_STATIC_LINK ON)
  target_link_options(${T} PRIVATE -static-pie)
  target_compile_definitions(${T} PRIVATE RPL_STATIC_PROGRAM=1)
endfunction()
