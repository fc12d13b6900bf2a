// Writing files so that a crash leaves either the old or the new content, never a torn file: temporary + fsync +
// rename + fsync of the directory (without the fsyncs a power loss can still leave an empty or torn file).
#pragma once
#include <string>

namespace frozenlm {

void write_file_atomically(const std::string& path, const std::string& bytes);
// fsync a file or a directory (a directory: its entries, i.e. renames and creations inside it are durable).
void fsync_path(const std::string& path);
// fsync every regular file under `dir` (recursively), then every directory, `dir` last.
void fsync_tree(const std::string& dir);

}  // namespace frozenlm
