# Work-around for the PyPI ROS 2 wheels: their exported `*__rosidl_generator_py` CMake targets
# name include directories of the machine that built the wheels (/opt/python/...), which makes
# CMake's generate step fail. Injected with -DCMAKE_PROJECT_INCLUDE=<this file> (never needed in
# a regular ROS 2 install): at the end of the top-level directory, once every find_package() has
# created its imported targets, drop the include directories that do not exist here and add this
# interpreter's Python and NumPy headers instead.
cmake_minimum_required(VERSION 3.19)  # cmake_language(DEFER)

function(_deltaworld_drop_missing_include_dirs)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
        list(APPEND _kept "${_dir}")
      else()
        set(_dropped TRUE)
      endif()
    endforeach()
    if(_dropped)
      list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES _kept)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endfunction()

if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _deltaworld_drop_missing_include_dirs)
endif()
