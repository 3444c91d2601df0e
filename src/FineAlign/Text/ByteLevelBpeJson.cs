using System.Globalization;
using System.Text.Json.Nodes;

namespace FineAlign.Text;

/// <summary>
/// The Hugging Face files of a byte-level BPE tokenizer whose every added token is special and whose post-processor
/// prepends BOS: what both the built-in byte tokenizer and <see cref="BpeTrainer"/> save, so both are written by one piece.
/// </summary>
internal static class ByteLevelBpeJson
{
    /// <summary><c>tokenizer.json</c>: BPE model, ByteLevel pre-tokenizer and decoder, TemplateProcessing with BOS.</summary>
    public static JsonObject Tokenizer(JsonObject vocab, JsonArray merges, IReadOnlyList<(int Id, string Content)> specials, string bos, int bosId)
    {
        var added = new JsonArray();
        foreach (var (id, content) in specials)
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        static JsonObject ByteLevelNode() => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true };
        static JsonObject Seq(string s, int type) => new() { ["Sequence"] = new JsonObject { ["id"] = s, ["type_id"] = type } };
        JsonObject Special() => new() { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevelNode(),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special(), Seq("A", 0)),
                ["pair"] = new JsonArray(Special(), Seq("A", 0), Seq("B", 1)),
                ["special_tokens"] = new JsonObject { [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(bosId), ["tokens"] = new JsonArray(bos) } },
            },
            ["decoder"] = ByteLevelNode(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
    }

    /// <summary><c>added_tokens_decoder</c> of tokenizer_config.json for the same special tokens.</summary>
    public static JsonObject AddedTokensDecoder(IReadOnlyList<(int Id, string Content)> specials)
    {
        var decoder = new JsonObject();
        foreach (var (id, content) in specials)
            decoder[id.ToString(CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = content, ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false,
                ["single_word"] = false, ["special"] = true,
            };
        return decoder;
    }
}
