namespace FineAlign.Text;

/// <summary>Picks the tokenizer implementation for a folder of tokenizer files.</summary>
public static class TokenizerLoader
{
    private static readonly string[] KnownFiles =
        ["tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];

    /// <summary>
    /// Order: a FineAlign byte tokenizer (marker in tokenizer_config.json) → tokenizer.json (what transformers'
    /// fast tokenizers read, run exactly by <see cref="Pipeline.TokenizerJson"/>) → tokenizer.model (SentencePiece)
    /// → vocab.json + merges.txt. When tokenizer.json is refused (an unsupported component) and one of the other
    /// files exists, that one is used; otherwise tokenizer.json's error (naming the component) is reported.
    /// </summary>
    public static TextTokenizer Load(string folder)
    {
        // Callers pass a model folder as often as a tokenizer folder: say "folder", not "tokenizer folder".
        if (File.Exists(folder)) throw new FineAlignException($"{folder}: is a file; expected a folder of tokenizer files");
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: folder not found (expected a model or tokenizer folder)");
        // A tokenizer file that is a device or FIFO (or a link to one) would be read forever; refuse it by name.
        foreach (string name in KnownFiles)
            if (File.Exists(Path.Combine(folder, name))) InputFile.RequireRegular(Path.Combine(folder, name));
        var config = TokenizerSettings.ReadObject(Path.Combine(folder, "tokenizer_config.json"));
        if (TokenizerSettings.TokenString(config?[ByteTokenizer.ConfigMarkerKey]) == "byte")
            return ByteTokenizer.Load(folder);

        bool hasSentencePiece = File.Exists(Path.Combine(folder, "tokenizer.model"));
        bool hasVocabMerges = File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt"));
        if (File.Exists(Path.Combine(folder, "tokenizer.json")))
        {
            try { return HfTokenizer.LoadTokenizerJson(folder); }
            catch (FineAlignException) when (hasSentencePiece || hasVocabMerges) { /* fall back to the other files */ }
        }
        if (hasSentencePiece) return HfTokenizer.LoadSentencePiece(folder);
        if (hasVocabMerges) return HfTokenizer.LoadVocabMerges(folder);

        throw new FineAlignException(
            $"no tokenizer found in '{folder}': looked for tokenizer.json, tokenizer.model (SentencePiece) " +
            "and vocab.json + merges.txt (GPT-2 BPE)");
    }
}
