using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>
/// The one place the server renders chat messages: through the library's chat templates (Text/ChatTemplates: a
/// preset, a .jinja file, or the model's own chat_template), so a served chat prompt is tokenized exactly as SFT trained it.
/// </summary>
internal sealed class ChatPrompt
{
    private readonly ChatTemplate _template;

    private ChatPrompt(ChatTemplate template)
    {
        _template = template;
        EndOfTurnId = template.EndOfTurn.Id;
    }

    /// <summary>The token that ends an assistant turn (ChatML's &lt;|im_end|&gt;, Llama 3's &lt;|eot_id|&gt;, else EOS) when it is one token.</summary>
    public int? EndOfTurnId { get; }

    /// <summary>The named template (--chat-template: preset, file or named template) or the model's own; else an error.</summary>
    public static ChatPrompt Resolve(string? name, TextTokenizer tokenizer, string folder) =>
        new(ChatTemplates.Resolve(name, tokenizer, folder));

    /// <summary>Token ids of the conversation followed by the assistant's generation prompt.</summary>
    public int[] Encode(IReadOnlyList<ChatMessage> messages) => _template.EncodePrompt(messages);
}
