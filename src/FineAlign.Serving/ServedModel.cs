using FineAlign.Models;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Serving;

/// <summary>
/// One loaded model folder: weights, tokenizer (null when the folder has none: token-id prompts only) and the chat
/// format. Immutable once loaded, so a reload builds a new one and swaps it in between batches.
/// </summary>
internal sealed class ServedModel : IDisposable
{
    public required CausalLM Model { get; init; }
    public TextTokenizer? Tokenizer { get; init; }
    public required string Folder { get; init; }
    public ChatPrompt? Chat { get; init; }
    /// <summary>Why chat is unavailable when <see cref="Chat"/> is null.</summary>
    public string? ChatError { get; init; }
    /// <summary>Token ids that end a completion.</summary>
    public required int[] Eos { get; init; }
    /// <summary>Chat turns also end at the format's end-of-turn token when it is one token (ChatML's &lt;|im_end|&gt;).</summary>
    public required int[] ChatEos { get; init; }
    public DateTimeOffset LoadedAt { get; } = DateTimeOffset.UtcNow;

    public int Context => Model.Config.MaxPositionEmbeddings;
    public int VocabSize => Model.Config.VocabSize;

    /// <summary>
    /// The Hugging Face folder of <paramref name="folder"/>: itself when it holds config.json, else its model/ subfolder
    /// (a FineAlign run or checkpoint).
    /// </summary>
    public static string ResolveFolder(string folder)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"{folder}: model folder not found");
        if (File.Exists(Path.Combine(folder, "config.json"))) return folder;
        string inner = Path.Combine(folder, "model");
        return File.Exists(Path.Combine(inner, "config.json")) ? inner : folder;   // ModelIO names what is missing
    }

    public static ServedModel Load(string folder, ScalarType dtype, string? chatTemplate)
    {
        string resolved = ResolveFolder(folder);
        var model = ModelIO.Load(resolved, dtype);
        try
        {
            model.eval();
            bool hasTokenizer = ModelIO.TokenizerFiles.Any(f => f is not ("chat_template.jinja" or "chat_template.json" or "special_tokens_map.json")
                                                                && File.Exists(Path.Combine(resolved, f)));
            var tokenizer = hasTokenizer ? TokenizerLoader.Load(resolved) : null;
            ChatPrompt? chat = null;
            string? chatError = null;
            if (tokenizer is null) chatError = "this model folder has no tokenizer files, so chat messages cannot be encoded";
            else
            {
                try { chat = ChatPrompt.Resolve(chatTemplate, tokenizer, resolved); }
                catch (FineAlignException ex) { if (chatTemplate is not null) throw; chatError = ex.Message; }
            }
            int[] eos = model.Config.EosTokenIds.Length > 0 ? model.Config.EosTokenIds.ToArray()
                : tokenizer?.EosId is int e ? [e] : [];
            int[] chatEos = chat?.EndOfTurnId is int end ? eos.Append(end).Distinct().ToArray() : eos;
            return new ServedModel { Model = model, Tokenizer = tokenizer, Folder = resolved, Chat = chat, ChatError = chatError, Eos = eos, ChatEos = chatEos };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose() => Model.Dispose();
}
