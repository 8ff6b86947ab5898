# CUTLASS headers come from the pinned `nvidia-cutlass` PyPI wheel. Lookup order:
#   1. -DNVFP4_CUTLASS_INCLUDE_DIR=... or the environment variable of the same name (the wheel's
#      cutlass_library/source/include folder);
#   2. an installed `cutlass_library` module in the build's Python;
#   3. `pip download --no-deps` of the pinned wheel into the build tree (its Python dependencies, cuda-python,
#      scipy and friends, are not needed for headers and are not installed).
set(NVFP4_CUTLASS_VERSION "4.2.0.0")
if(NOT NVFP4_CUTLASS_INCLUDE_DIR AND DEFINED ENV{NVFP4_CUTLASS_INCLUDE_DIR})
  set(NVFP4_CUTLASS_INCLUDE_DIR "$ENV{NVFP4_CUTLASS_INCLUDE_DIR}")
endif()
find_package(Python COMPONENTS Interpreter)
if(NOT NVFP4_CUTLASS_INCLUDE_DIR AND Python_Interpreter_FOUND)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
    OUTPUT_VARIABLE _found OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
  if(_rc EQUAL 0 AND EXISTS "${_found}/cutlass/cutlass.h")
    set(NVFP4_CUTLASS_INCLUDE_DIR "${_found}")
  endif()
endif()
if(NOT NVFP4_CUTLASS_INCLUDE_DIR)
  set(_dir "${CMAKE_BINARY_DIR}/_deps/cutlass-${NVFP4_CUTLASS_VERSION}")
  if(NOT EXISTS "${_dir}/cutlass_library/source/include/cutlass/cutlass.h")
    if(NOT Python_Interpreter_FOUND)
      message(FATAL_ERROR "nvfp4: CUTLASS headers not found and no Python to fetch nvidia-cutlass; set NVFP4_CUTLASS_INCLUDE_DIR")
    endif()
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check
              "nvidia-cutlass==${NVFP4_CUTLASS_VERSION}" -d "${_dir}/wheel"
      RESULT_VARIABLE _rc)
    file(GLOB _wheel "${_dir}/wheel/nvidia_cutlass-*.whl")
    if(NOT _rc EQUAL 0 OR NOT _wheel)
      message(FATAL_ERROR "nvfp4: could not download nvidia-cutlass==${NVFP4_CUTLASS_VERSION}; set NVFP4_CUTLASS_INCLUDE_DIR")
    endif()
    file(ARCHIVE_EXTRACT INPUT "${_wheel}" DESTINATION "${_dir}" PATTERNS "cutlass_library/source/include/*"
         "cutlass_library/source/tools/util/include/*")
  endif()
  set(NVFP4_CUTLASS_INCLUDE_DIR "${_dir}/cutlass_library/source/include")
endif()
if(NOT EXISTS "${NVFP4_CUTLASS_INCLUDE_DIR}/cutlass/cutlass.h")
  message(FATAL_ERROR "nvfp4: NVFP4_CUTLASS_INCLUDE_DIR='${NVFP4_CUTLASS_INCLUDE_DIR}' has no cutlass/cutlass.h")
endif()
get_filename_component(_util "${NVFP4_CUTLASS_INCLUDE_DIR}/../tools/util/include" ABSOLUTE)
set(NVFP4_CUTLASS_INCLUDE_DIRS "${NVFP4_CUTLASS_INCLUDE_DIR}" "${_util}")
message(STATUS "nvfp4: CUTLASS headers at ${NVFP4_CUTLASS_INCLUDE_DIR}")
