namespace FineAlign.Text;

/// <summary>
/// What every tokenizer offers the rest of FineAlign. Implementations: Hugging Face tokenizer files
/// through Microsoft.ML.Tokenizers (SentencePiece, GPT-2 BPE, tokenizer.json) and the built-in
/// byte-level tokenizer for models trained from scratch.
/// </summary>
public abstract class TextTokenizer
{
    public abstract int VocabSize { get; }

    public int? BosId { get; init; }
    public int? EosId { get; init; }
    /// <summary>Padding id; falls back to EOS, as most causal LMs have no pad token.</summary>
    public int? PadId { get; init; }
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? PadToken { get; init; }
    /// <summary>Whether a sequence starts with BOS (<c>add_bos_token</c> in tokenizer_config.json).</summary>
    public bool AddBos { get; init; }
    /// <summary>The raw <c>chat_template</c> of tokenizer_config.json, if any.</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>Token ids of <paramref name="text"/> without BOS/EOS (special-token strings in the text are recognised).</summary>
    public abstract int[] Encode(string text);

    /// <summary>
    /// Token ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/> the special tokens a sequence
    /// gets (BOS, and whatever a tokenizer.json post-processor adds), as transformers' <c>encode</c> does.
    /// </summary>
    public virtual int[] Encode(string text, bool addSpecialTokens) =>
        addSpecialTokens && AddBos && BosId is int bos ? [bos, .. Encode(text)] : Encode(text);

    /// <summary>The vocabulary string of <paramref name="id"/> (e.g. "Ġhello", "▁the", "&lt;|im_end|&gt;"), or null when unknown.</summary>
    public virtual string? IdToToken(int id) => null;

    /// <summary>Whether <paramref name="id"/> is a special token (dropped when decoding with skipSpecialTokens).</summary>
    public virtual bool IsSpecialToken(int id) => false;

    /// <summary>Text of the ids; special tokens are dropped unless <paramref name="skipSpecialTokens"/> is false.</summary>
    public abstract string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true);

    /// <summary>Writes the tokenizer files into <paramref name="folder"/> in Hugging Face format.</summary>
    public abstract void Save(string folder);

    /// <summary>The id used to pad batches.</summary>
    public int PaddingId => PadId ?? EosId ?? 0;
}
