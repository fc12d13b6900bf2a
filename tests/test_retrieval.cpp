// Retrieval without the LM (retrieval/): corpus reading and chunking, BM25 through Xapian against an independent
// Python implementation of the same formula (tests/bm25_reference.py), index build/add/stats and their refusals,
// and shards (two databases, one of them served by xapian-tcpsrv) returning what one database returns.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "retrieval/bm25.h"
#include "retrieval/passage_index.h"
#include "retrieval/packing.h"
#include "retrieval/passages.h"
#include "retrieval/rank_fusion.h"

namespace frozenlm::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string data(const std::string& name) { return std::string(FROZENLM_SOURCE) + "/tests/data/retrieval/" + name; }

std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::path(FROZENLM_TEST_TMP) / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p.string();
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string p = fresh_dir(name);
  std::ofstream(p) << text;
  return p;
}

// The error message of f(), or "" when it does not throw frozenlm::Error.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

IndexBuildOptions quiet() {
  IndexBuildOptions o;
  o.progress = false;
  return o;
}

std::vector<std::string> ids_of(const Bm25Searcher& s, const std::vector<RetrievalHit>& hits) {
  std::vector<std::string> ids;
  for (const auto& h : hits) ids.push_back(s.passage(h.docid).id);
  return ids;
}

TEST(Passages, LongDocumentsAreCutIntoTitledChunksOfAboutNWords) {
  std::string text;
  for (int i = 0; i < 250; ++i) text += "w" + std::to_string(i) + (i % 7 == 0 ? "\n" : "  ");
  const auto chunks = chunk_document({"doc", "Title", text}, 100);
  ASSERT_EQ(chunks.size(), 3u);  // round(250 / 100) = 3 chunks of 83, 83, 84 words
  std::vector<std::string> all;
  for (size_t k = 0; k < chunks.size(); ++k) {
    EXPECT_EQ(chunks[k].id, "doc#" + std::to_string(k + 1));
    EXPECT_EQ(chunks[k].title, "Title");
    const auto w = split_words(chunks[k].text);
    EXPECT_GE(w.size(), 83u);
    EXPECT_LE(w.size(), 84u);
    all.insert(all.end(), w.begin(), w.end());
  }
  EXPECT_EQ(all, split_words(text));  // every word once, in order
  // At most chunk_words, or 0: one passage, the text unchanged.
  EXPECT_EQ(chunk_document({"d", "", "a  b\tc"}, 3)[0].text, "a  b\tc");
  EXPECT_EQ(chunk_document({"d", "", text}, 0).size(), 1u);
  EXPECT_EQ(chunk_document({"d", "", text}, 300).size(), 1u);
  EXPECT_EQ(chunk_document({"d", "", text}, 200).size(), 1u);  // round(1.25) = 1
}

TEST(Passages, BadCorpusLinesAreNamedWithTheirLine) {
  auto first_error = [&](const std::string& body) {
    const std::string p = write_file("corpus/bad.jsonl", body);
    return error_of([&] { read_corpus(p, 100, [](const Passage&, const std::string&) {}); });
  };
  EXPECT_NE(first_error("{\"id\": \"a\", \"text\": \"x\"}\n{not json\n").find("bad.jsonl:2: not valid JSON"), std::string::npos);
  EXPECT_NE(first_error("{\"id\": \"a\", \"text\": \"x\"}\n\n{\"text\": \"y\"}\n").find("bad.jsonl:3: no \"id\" field"), std::string::npos);
  EXPECT_NE(first_error("{\"id\": \"a\"}\n").find("bad.jsonl:1: no \"text\" string field"), std::string::npos);
  EXPECT_NE(first_error("{\"id\": \"a\", \"text\": \"  \"}\n").find("bad.jsonl:1: \"text\" is empty"), std::string::npos);
  EXPECT_NE(first_error("{\"id\": [1], \"text\": \"x\"}\n").find("bad.jsonl:1: \"id\" must be a string or an integer"), std::string::npos);
  EXPECT_NE(first_error("{\"id\": \"a\", \"text\": \"x\", \"title\": 3}\n").find("bad.jsonl:1: \"title\" must be a string"), std::string::npos);
  EXPECT_NE(first_error("\n\n").find("the corpus is empty"), std::string::npos);
  EXPECT_NE(error_of([] { read_corpus("/nonexistent/c.jsonl", 100, [](const Passage&, const std::string&) {}); }).find("/nonexistent/c.jsonl: cannot open"),
            std::string::npos);
}

// Every query's full ranking (ids, order, scores) equals the Python reference's, at two parameter settings.
TEST(Bm25, RankingEqualsAnIndependentImplementationOfTheFormula) {
  // The reference does not stem: check that stemming leaves this corpus's words as they are.
  std::ifstream corpus(data("bm25_corpus.jsonl"));
  for (std::string line; std::getline(corpus, line);) {
    const json d = json::parse(line);
    std::string text = d.value("title", "") + " " + d["text"].get<std::string>(), word;
    std::vector<std::string> words;
    for (char c : text + " ") {
      if (std::isalnum((unsigned char)c)) word += char(std::tolower((unsigned char)c));
      else if (!word.empty()) { words.push_back(word); word.clear(); }
    }
    ASSERT_EQ(bm25_terms(text), words) << "a word of the test corpus is changed by stemming: " << text;
  }
  for (const auto& [k1, b] : std::vector<std::pair<double, double>>{{1.2, 0.75}, {2.0, 0.3}}) {
    char name[64];
    std::snprintf(name, sizeof name, "bm25_reference_%.1f_%.2f.json", k1, b);
    std::ifstream f(std::string(FROZENLM_FIXTURES) + "/" + name);
    ASSERT_TRUE(f.good()) << name << " missing (the make_bm25_reference test writes it)";
    const json ref = json::parse(f);
    const std::string dir = fresh_dir(std::string("bm25-ref-") + name);
    IndexBuildOptions o = quiet();
    build_index(data("bm25_corpus.jsonl"), dir, o);
    Bm25Searcher s({dir + "/bm25"});
    ASSERT_EQ(s.size(), 12u);
    for (const auto& [query, want] : ref.items()) {
      const auto hits = s.search(query, 100, {k1, b});
      ASSERT_EQ(hits.size(), want.size()) << "query '" << query << "' k1 " << k1 << " b " << b;
      for (size_t r = 0; r < hits.size(); ++r) {
        EXPECT_EQ(s.passage(hits[r].docid).id, want[r][0].get<std::string>()) << "query '" << query << "' rank " << r + 1;
        EXPECT_NEAR(hits[r].score, want[r][1].get<double>(), 1e-9) << "query '" << query << "' rank " << r + 1;
      }
    }
  }
}

TEST(Bm25, StemmingMatchesWordFormsAndAPassageKeepsItsTitleAndText) {
  const std::string corpus = write_file("corpus/stem.jsonl",
                                        "{\"id\": \"x\", \"title\": \"Running cats\", \"text\": \"Cats were running quickly.\"}\n"
                                        "{\"id\": \"y\", \"text\": \"A dog sleeps.\"}\n");
  const std::string dir = fresh_dir("bm25-stem");
  build_index(corpus, dir, quiet());
  Bm25Searcher s({dir + "/bm25"});
  const auto hits = s.search("the cat runs", 10, {});
  ASSERT_EQ(ids_of(s, hits), std::vector<std::string>{"x"});
  const Passage p = s.passage(hits[0].docid);
  EXPECT_EQ(p.title, "Running cats");
  EXPECT_EQ(p.text, "Cats were running quickly.");
  EXPECT_TRUE(s.search("...", 10, {}).empty());      // no word: nothing, not an error
  EXPECT_NO_THROW(s.search("NOT AND \"( OR -", 10, {}));  // no query syntax, so no syntax error
  EXPECT_EQ(ids_of(s, s.search("dog AND cat", 10, {})).size(), 2u);  // "AND" is a word, not an operator
}

TEST(PassageIndex, BuildAddAndStatsKeepCountsAndRefuseDuplicatesWithoutLosingTheIndex) {
  const std::string dir = fresh_dir("index-add");
  const IndexManifest m = build_index(data("bm25_corpus.jsonl"), dir, quiet());
  EXPECT_EQ(m.documents, 12);
  EXPECT_EQ(m.passages, 12);
  EXPECT_EQ(read_index_manifest(dir).passages, 12);
  // Building over an existing index is refused; the index is untouched.
  EXPECT_NE(error_of([&] { build_index(data("bm25_corpus.jsonl"), dir, quiet()); }).find("already exists"), std::string::npos);
  // A duplicate inside the corpus: named with its line, and nothing is left behind.
  const std::string dup = write_file("corpus/dup.jsonl", "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"y\"}\n{\"id\": \"a\", \"text\": \"z\"}\n");
  const std::string dir2 = fresh_dir("index-dup");
  EXPECT_NE(error_of([&] { build_index(dup, dir2, quiet()); }).find("dup.jsonl:3: duplicate passage id 'a'"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir2));
  EXPECT_FALSE(fs::exists(dir2 + ".partial"));
  // A build killed midway leaves DIR.partial (its half-written database), not DIR: the next build replaces it.
  const std::string dir3 = fresh_dir("index-interrupted");
  fs::create_directories(dir3 + ".partial/bm25");
  fs::copy(data("bm25_corpus.jsonl"), dir3 + ".partial/bm25/leftover");
  EXPECT_EQ(build_index(data("bm25_corpus.jsonl"), dir3, quiet()).passages, 12);
  EXPECT_FALSE(fs::exists(dir3 + ".partial"));
  EXPECT_FALSE(fs::exists(dir3 + "/bm25/leftover"));
  EXPECT_EQ(read_index_manifest(dir3).passages, 12);
  // add: new passages land; one already in the index makes the whole add fail and changes nothing.
  const std::string more = write_file("corpus/more.jsonl", "{\"id\": \"q1\", \"text\": \"a zebra and a camel\"}\n");
  EXPECT_EQ(add_to_index(dir, more, false).passages, 13);
  const std::string clash = write_file("corpus/clash.jsonl", "{\"id\": \"q2\", \"text\": \"a lion\"}\n{\"id\": \"p5\", \"text\": \"again\"}\n");
  EXPECT_NE(error_of([&] { add_to_index(dir, clash, false); }).find("clash.jsonl:2: duplicate passage id 'p5' (already in the index)"), std::string::npos);
  Bm25Searcher s({dir + "/bm25"});
  EXPECT_EQ(s.size(), 13u);
  EXPECT_TRUE(s.search("lion", 5, {}).empty());
  EXPECT_EQ(ids_of(s, s.search("zebra", 5, {})), std::vector<std::string>{"q1"});
  const json st = index_stats(dir);
  EXPECT_EQ(st["passages"], 13);
  EXPECT_EQ(st["database"]["passages"], 13);
  EXPECT_GT(st["database"]["distinct_terms"].get<int64_t>(), 30);
  EXPECT_GT(st["database"]["bytes_on_disk"].get<int64_t>(), 0);
}

TEST(PassageIndex, MissingOrCorruptIndexesAreNamed) {
  EXPECT_NE(error_of([] { read_index_manifest("/nonexistent/idx"); }).find("/nonexistent/idx: no such index"), std::string::npos);
  const std::string empty = fresh_dir("index-empty");
  fs::create_directories(empty);
  EXPECT_NE(error_of([&] { read_index_manifest(empty); }).find("not a frozenlm index (no manifest.json)"), std::string::npos);
  std::ofstream(empty + "/manifest.json") << "{\"format\": \"frozenlm-passage-index\", \"version\": 1";
  EXPECT_NE(error_of([&] { read_index_manifest(empty); }).find("manifest.json: corrupt"), std::string::npos);
  std::ofstream(empty + "/manifest.json") << "{\"format\": \"frozenlm-passage-index\", \"version\": 1, \"documents\": 1, \"passages\": 1, "
                                             "\"chunk_words\": 100, \"bm25\": {\"k1\": 1.2, \"b\": 0.75}}";
  EXPECT_NE(error_of([&] { read_index_manifest(empty); }).find("has no bm25/ database"), std::string::npos);
  fs::create_directories(empty + "/bm25");
  EXPECT_NE(error_of([&] { Bm25Searcher s({empty + "/bm25"}); }).find("cannot open the BM25 database"), std::string::npos);
  EXPECT_NE(error_of([] { Bm25Searcher s({"/nonexistent/bm25"}); }).find("/nonexistent/bm25: no BM25 database here"), std::string::npos);
}

// Hand-computed: A = [1, 2, 3], B = [3, 4] -> 3: 1/63 + 1/61, 1: 1/61, then 2 and 4 tie at 1/62 (both best rank 2):
// the lower docid first.
TEST(RankFusion, ReciprocalRanksAddUpAndTiesAreDeterministic) {
  const std::vector<RetrievalHit> a{{1, 9.0}, {2, 8.0}, {3, 7.0}}, b{{3, 0.9}, {4, 0.8}};
  const auto fused = reciprocal_rank_fusion({a, b}, 10);
  ASSERT_EQ(fused.size(), 4u);
  const std::vector<uint32_t> order{fused[0].docid, fused[1].docid, fused[2].docid, fused[3].docid};
  EXPECT_EQ(order, (std::vector<uint32_t>{3, 1, 2, 4}));
  EXPECT_NEAR(fused[0].score, 1.0 / 63 + 1.0 / 61, 1e-15);
  EXPECT_NEAR(fused[1].score, 1.0 / 61, 1e-15);
  EXPECT_NEAR(fused[3].score, 1.0 / 62, 1e-15);
  EXPECT_EQ(reciprocal_rank_fusion({a, b}, 2).size(), 2u);
  EXPECT_EQ(reciprocal_rank_fusion({b, a}, 10)[0].docid, 3u);  // symmetric in the rankings
}

// A stand-in tokenizer for packing: one token a word, one for each newline.
int64_t words_and_newlines(const std::string& s) { return int64_t(split_words(s).size() + std::count(s.begin(), s.end(), '\n')); }

TEST(Packing, WholePassagesInOrderUntilTheNextDoesNotFit) {
  const std::vector<Passage> ranked{{"a", "A", "one two three four"}, {"b", "B", "five six seven"}, {"c", "C", "eight nine ten eleven twelve"},
                                    {"d", "D", "tiny"}};
  // 4 + (1 + 3) = 8 fits 9; c would make 14: packing stops there, and d (which would fit) is not taken out of order.
  PackedContext p = pack_passages(ranked, 9, words_and_newlines);
  EXPECT_EQ(p.included, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(p.context, "one two three four\nfive six seven");
  EXPECT_EQ(p.tokens, 8);
  EXPECT_FALSE(p.first_cut);
  // Exactly full: all four (4 + 4 + 6 + 2 = 16).
  EXPECT_EQ(pack_passages(ranked, 16, words_and_newlines).included.size(), 4u);
  EXPECT_EQ(pack_passages(ranked, 15, words_and_newlines).included.size(), 3u);
  // The best passage alone overflows: cut at the end to its longest word prefix that fits.
  p = pack_passages(ranked, 3, words_and_newlines);
  EXPECT_EQ(p.included, std::vector<size_t>{0});
  EXPECT_EQ(p.context, "one two three");
  EXPECT_TRUE(p.first_cut);
  // Formats and separators; the title counts.
  PackOptions o;
  o.passage_format = "{title}: {text}";
  o.separator = "\n\n";
  p = pack_passages(ranked, 12, words_and_newlines, o);
  EXPECT_EQ(p.context, "A: one two three four\n\nB: five six seven");
  EXPECT_EQ(p.tokens, 5 + 2 + 4);
  EXPECT_TRUE(pack_passages({}, 5, words_and_newlines).context.empty());
  EXPECT_NE(error_of([&] { pack_passages(ranked, 0, words_and_newlines); }).find("no room for any passage"), std::string::npos);
}

// At most max_passages; best_last lists the same chosen passages worst first (the best next to the question), and
// when the reversed text no longer fits (a tokenizer that counts a separator differently) the lowest-ranked goes.
TEST(Packing, MaxPassagesAndBestLastOrder) {
  const std::vector<Passage> ranked{{"a", "A", "one two three four"}, {"b", "B", "five six seven"}, {"c", "C", "eight nine"},
                                    {"d", "D", "tiny"}};
  PackOptions o;
  o.max_passages = 2;
  PackedContext p = pack_passages(ranked, 100, words_and_newlines, o);
  EXPECT_EQ(p.included, (std::vector<size_t>{0, 1}));
  o.max_passages = 0;
  o.best_last = true;
  p = pack_passages(ranked, 100, words_and_newlines, o);
  EXPECT_EQ(p.included, (std::vector<size_t>{0, 1, 2, 3}));  // chosen best first
  EXPECT_EQ(p.context, "tiny\neight nine\nfive six seven\none two three four");
  EXPECT_EQ(p.tokens, 4 + 3 + 3 + 2 + 1);
  p = pack_passages(ranked, 9, words_and_newlines, o);
  EXPECT_EQ(p.context, "five six seven\none two three four");
  // A count in which a text ending on the best passage after a newline costs 3 more: best first, all four fit 13
  // exactly; reversed, 4 passages (13 + 3) and then 3 (11 + 3) overflow, so d and then c go.
  auto odd = [](const std::string& s) { return words_and_newlines(s) + (s.size() >= 4 && s.substr(s.size() - 4) == "four" && s.find('\n') != std::string::npos ? 3 : 0); };
  p = pack_passages(ranked, 13, odd, o);
  EXPECT_EQ(p.included, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(p.context, "five six seven\none two three four");
  EXPECT_LE(p.tokens, 13);
  o.max_passages = -1;
  EXPECT_NE(error_of([&] { pack_passages(ranked, 9, words_and_newlines, o); }).find("max_passages must be >= 0"), std::string::npos);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Two shards (corpus split by line parity) searched as one give one database's ranking and scores (Xapian combines
// the statistics); the same with the second shard served over TCP by xapian-tcpsrv on 127.0.0.1.
TEST(Bm25, ShardsLocalAndRemoteReturnWhatOneDatabaseReturns) {
  std::ifstream corpus(data("bm25_corpus.jsonl"));
  std::string even, odd, line;
  for (int n = 0; std::getline(corpus, line); ++n) (n % 2 ? odd : even) += line + "\n";
  const std::string whole = fresh_dir("shards-whole"), a = fresh_dir("shards-a"), b = fresh_dir("shards-b");
  build_index(data("bm25_corpus.jsonl"), whole, quiet());
  build_index(write_file("corpus/even.jsonl", even), a, quiet());
  build_index(write_file("corpus/odd.jsonl", odd), b, quiet());
  Bm25Searcher one({whole + "/bm25"});
  auto same = [&](const Bm25Searcher& s, const std::string& what) {
    EXPECT_EQ(s.size(), one.size()) << what;
    for (const char* q : {"cat", "the lake", "gold hat", "old wall road", "the"}) {
      const auto h1 = one.search(q, 5, {}), h2 = s.search(q, 5, {});
      ASSERT_EQ(h1.size(), h2.size()) << what << ": " << q;
      for (size_t r = 0; r < h1.size(); ++r) {
        EXPECT_EQ(one.passage(h1[r].docid).id, s.passage(h2[r].docid).id) << what << ": '" << q << "' rank " << r + 1;
        EXPECT_NEAR(h1[r].score, h2[r].score, 1e-9) << what << ": '" << q << "' rank " << r + 1;
      }
    }
  };
  same(Bm25Searcher({a + "/bm25", b + "/bm25"}), "two local shards");
  const int port = free_port();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // its own process group: on SIGTERM xapian-tcpsrv signals its whole group
    const std::string p = std::to_string(port), db = b + "/bm25";
    ::execlp("xapian-tcpsrv", "xapian-tcpsrv", "--interface", "127.0.0.1", "--port", p.c_str(), "--quiet", db.c_str(), (char*)nullptr);
    std::perror("exec xapian-tcpsrv (Debian package xapian-tools)");
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  std::unique_ptr<Bm25Searcher> remote;
  std::string last_error;
  for (int attempt = 0; attempt < 100 && !remote; ++attempt) {  // until the server listens (up to ~10 s)
    try {
      remote = std::make_unique<Bm25Searcher>(std::vector<std::string>{a + "/bm25", "127.0.0.1:" + std::to_string(port)});
    } catch (const Error& e) {
      last_error = e.what();
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) break;  // the server exited
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_TRUE(remote) << "the remote shard never opened: " << last_error;
  if (remote) same(*remote, "a local and a remote shard");
  remote.reset();
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace frozenlm::test
