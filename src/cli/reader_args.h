// The frozen-reader pipeline's command-line options, shared by `answer`, `eval --reader/--index` and `train reader`
// (cmd_answer.cpp).
#pragma once
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "methods/reader/reader_pipeline.h"

namespace frozenlm::cli {

// --index, --retrieval, --candidates, --rerank, --reranker (and --max-new-tokens); returns the options (to see which
// were given).
std::vector<CLI::Option*> add_reader_pipeline_args(CLI::App* c, ReaderOptions& o, bool with_max_new_tokens = true);
// A trained reader's reader.json (when `reader_dir` has one), overridden by what the command line gave explicitly.
ReaderOptions reader_options(const std::string& reader_dir, const ReaderOptions& cli, const std::vector<CLI::Option*>& given);

}  // namespace frozenlm::cli
