// Retrieval corpus: passages {id, title, text} read from JSONL, long documents cut into ~N-word passages that keep
// their title. No LibTorch here.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace frozenlm {

struct Passage {
  std::string id;     // unique in an index; a chunk of document D is "D#k" (k = 1, 2, ...)
  std::string title;  // may be empty
  std::string text;
};

// A document of more than `chunk_words` whitespace-separated words becomes round(words / chunk_words) passages of as
// equal a length as possible (so each is between 2/3 and 4/3 of chunk_words), ids "<id>#1", "<id>#2", ..., each
// with the document's title; a shorter one stays one passage with its id and text unchanged. chunk_words 0: never cut.
std::vector<Passage> chunk_document(const Passage& doc, int64_t chunk_words);

// Streams a JSONL corpus, one document a line: "id" (string or integer, required, non-empty), "text" (string,
// required, non-empty), "title" (string, optional); other fields are ignored. Calls `on_passage` for every passage
// after chunking, with the "file:line" of its document. Errors name file:line and what is wrong (not JSON, a missing
// or mistyped field); an empty corpus (no document) is an error. Returns the number of documents read.
int64_t read_corpus(const std::string& path, int64_t chunk_words,
                    const std::function<void(const Passage&, const std::string& where)>& on_passage);

// Words of `text` split on whitespace (what chunk sizes count).
std::vector<std::string> split_words(const std::string& text);

}  // namespace frozenlm
