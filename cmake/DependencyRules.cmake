# Enforces CONTRIBUTING.md's dependency rules at configure time: which of our folders a folder's
# sources may #include from, and (rpl_check_links) what the agent's targets may link. A violation
# fails the configure with the offending line or library.
#   proto/           -> include/ only (and its own internal headers)
#   driver/          -> include/cbt_shared.h only (the one plain-C header shared with agent/)
#   agent/           -> include/, its own headers, the driver's skeleton; never appliance/ (azure/ too)
#   appliance/azure/ -> include/ and its own headers (not the rest of appliance/, not agent/, driver/)
#   appliance/       -> include/, its own headers, azure/'s public headers (blob.h, netpath.h)
# Each "quoted" (or <angled> one naming a header of ours) include is resolved as the compiler would:
# the including file's folder first, then the allowed folders. It must land in an allowed folder;
# one that lands elsewhere, or nowhere (a header only some other folder's include path would find),
# breaks the rule.

# Every header of ours, by the name an #include would use, to tell <angled> includes of ours from
# system headers.
file(GLOB_RECURSE _rpl_all_headers ${CMAKE_SOURCE_DIR}/include/*.h ${CMAKE_SOURCE_DIR}/proto/*.h
     ${CMAKE_SOURCE_DIR}/agent/*.h ${CMAKE_SOURCE_DIR}/appliance/*.h ${CMAKE_SOURCE_DIR}/driver/*.h)
set(_rpl_header_names "")
foreach(h ${_rpl_all_headers})
  get_filename_component(n ${h} NAME)
  list(APPEND _rpl_header_names ${n})
endforeach()

# rpl_check_includes(DIR [EXCLUDE subdir...] [ALLOW dir...] [GENERATED name...] [FORBID name...])
#   DIR, EXCLUDE, ALLOW: folders relative to the source root; DIR's files are checked (recursively,
#   minus EXCLUDE), their own folder is always allowed, an ALLOW folder with the folders below it. GENERATED: headers made at build time that
#   DIR may include by name. FORBID: header names DIR must never include, wherever they are.
function(rpl_check_includes DIR)
  cmake_parse_arguments(ARG "" "" "EXCLUDE;ALLOW;GENERATED;FORBID" ${ARGN})
  set(allowed "")
  foreach(a ${ARG_ALLOW})
    list(APPEND allowed ${CMAKE_SOURCE_DIR}/${a})
  endforeach()
  list(TRANSFORM ARG_ALLOW APPEND "/" OUTPUT_VARIABLE may)
  list(JOIN may ", " may)
  file(GLOB_RECURSE files ${CMAKE_SOURCE_DIR}/${DIR}/*.c ${CMAKE_SOURCE_DIR}/${DIR}/*.h)
  foreach(f ${files})
    set(skip FALSE)
    foreach(x ${ARG_EXCLUDE})
      string(FIND "${f}" "${CMAKE_SOURCE_DIR}/${x}/" at)
      if(at EQUAL 0)
        set(skip TRUE)
      endif()
    endforeach()
    if(skip)
      continue()
    endif()
    get_filename_component(own ${f} DIRECTORY)
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
    foreach(l ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[\"<]([^\">]*)[\">].*" "\\1" name "${l}")
      get_filename_component(base ${name} NAME)
      if(l MATCHES "^[ \t]*#[ \t]*include[ \t]*<" AND NOT base IN_LIST _rpl_header_names)
        continue()   # a system or external library header
      endif()
      if(base IN_LIST ARG_FORBID)
        message(FATAL_ERROR "dependency rule broken in ${f}: '${l}': ${DIR}/ must not include ${base} (see CONTRIBUTING.md)")
      endif()
      set(found "")
      foreach(d ${own} ${allowed})
        if(EXISTS ${d}/${name})
          set(found ${d}/${name})
          break()
        endif()
      endforeach()
      if(NOT found)
        if(base IN_LIST ARG_GENERATED)
          continue()
        endif()
        message(FATAL_ERROR "dependency rule broken in ${f}: '${l}' is not a header of ${DIR}/ or of "
                            "the folders it may use (${may}) (see CONTRIBUTING.md)")
      endif()
      # Where it really lands: "../x/y.h" resolves out of the allowed folders.
      get_filename_component(real ${found} REALPATH)
      get_filename_component(realdir ${real} DIRECTORY)
      get_filename_component(ownreal ${own} REALPATH)
      set(ok FALSE)
      if(realdir STREQUAL ownreal)
        set(ok TRUE)
      endif()
      foreach(d ${allowed})
        get_filename_component(dreal ${d} REALPATH)
        string(FIND "${realdir}/" "${dreal}/" at)
        if(at EQUAL 0)
          set(ok TRUE)   # an allowed folder or one below it
        endif()
      endforeach()
      if(NOT ok)
        message(FATAL_ERROR "dependency rule broken in ${f}: '${l}' reaches ${real}, outside what "
                            "${DIR}/ may use (${may}) (see CONTRIBUTING.md)")
      endif()
    endforeach()
  endforeach()
endfunction()

# blob_internal.h is the client's private header: only appliance/azure/ (and tests/fuzz) include it.
# blob.h and netpath.h are the appliance's alone: the agent never names them, wherever they live.
rpl_check_includes(proto ALLOW include GENERATED rpl_version.h
                   FORBID blob.h blob_internal.h netpath.h)
rpl_check_includes(agent ALLOW include GENERATED rpl_version.h cbt_bpf.skel.h cbt_bounded_bpf.skel.h cbt_legacy_bpf.skel.h
                   FORBID blob.h blob_internal.h netpath.h)
rpl_check_includes(appliance/azure ALLOW include)
# appliance/ lists itself so that a folder of its own below it (other than azure/) may use its headers.
rpl_check_includes(appliance EXCLUDE appliance/azure appliance/web ALLOW include appliance appliance/azure
                   GENERATED rpl_version.h FORBID blob_internal.h)
# driver/ may include exactly one header of ours: cbt_shared.h
file(GLOB driver_files ${CMAKE_SOURCE_DIR}/driver/*.c ${CMAKE_SOURCE_DIR}/driver/*.h)
foreach(f ${driver_files})
  file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(l ${lines})
    if(NOT l MATCHES "\"(cbt_shared\\.h|vmlinux_min\\.h)\"")
      message(FATAL_ERROR "driver/ may include only cbt_shared.h of ours (and its own vmlinux_min.h): ${f}: '${l}'")
    endif()
  endforeach()
endforeach()

# rpl_check_links(TARGET... FORBID lib...): none of TARGET's link libraries, followed through our
# libraries' own (LINK_LIBRARIES, INTERFACE_LINK_LIBRARIES, $<LINK_ONLY:...> of static ones), is one
# of FORBID (a target name, or a library file whose name contains it). Called once every target
# exists: the agent must not carry the page-blob client's libcurl and expat.
function(_rpl_link_closure T OUT SEEN)
  set(seen ${${SEEN}})
  set(acc ${${OUT}})
  if(T IN_LIST seen)
    return()
  endif()
  list(APPEND seen ${T})
  list(APPEND acc ${T})
  set(libs "")
  if(TARGET ${T})
    get_target_property(imported ${T} IMPORTED)
    get_target_property(type ${T} TYPE)
    if(NOT imported AND NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(l ${T} LINK_LIBRARIES)
      if(l)
        list(APPEND libs ${l})
      endif()
    endif()
    get_target_property(l ${T} INTERFACE_LINK_LIBRARIES)
    if(l)
      list(APPEND libs ${l})
    endif()
  endif()
  foreach(l ${libs})
    string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" l "${l}")
    # cmake/StaticAgent.cmake's choice of the shared or the static library: both are followed.
    string(REGEX REPLACE "^\\$<\\$<.*RPL_STATIC_LINK>+:([^<>]*)>$" "\\1" l "${l}")
    if(l MATCHES "^\\$<" OR l STREQUAL "")
      message(FATAL_ERROR "rpl_check_links: cannot follow '${l}' (of ${T}); teach cmake/DependencyRules.cmake")
    endif()
    _rpl_link_closure(${l} acc seen)
  endforeach()
  set(${OUT} ${acc} PARENT_SCOPE)
  set(${SEEN} ${seen} PARENT_SCOPE)
endfunction()

function(rpl_check_links)
  cmake_parse_arguments(ARG "" "" "TARGETS;FORBID" ${ARGN})
  foreach(t ${ARG_TARGETS})
    if(NOT TARGET ${t})
      message(FATAL_ERROR "rpl_check_links: no target ${t} yet (call it after the target is defined)")
    endif()
    set(closure "")
    set(seen "")
    _rpl_link_closure(${t} closure seen)
    foreach(l ${closure})
      foreach(bad ${ARG_FORBID})
        get_filename_component(n "${l}" NAME)
        if(l STREQUAL bad OR (NOT TARGET ${l} AND n MATCHES "${bad}"))
          message(FATAL_ERROR "dependency rule broken: ${t} links ${l} (forbidden: ${bad}; see CONTRIBUTING.md)")
        endif()
      endforeach()
    endforeach()
  endforeach()
endfunction()
