using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>
/// The one place the server renders chat messages: the model's chat template through the library's
/// <see cref="ChatTemplates"/> (its Jinja chat_template, a chat_template.jinja, or a preset named with --chat-template),
/// tokenized exactly as SFT trains the same conversation.
/// </summary>
internal sealed class ChatPrompt
{
    private readonly ChatTemplate _template;

    private ChatPrompt(ChatTemplate template)
    {
        _template = template;
        EndOfTurnId = template.EndOfTurn.Id;   // ChatML's <|im_end|>, Llama 3's <|eot_id|>, ... (else eos)
    }

    /// <summary>The token that ends an assistant turn (one token), stopping a chat completion beside EOS.</summary>
    public int? EndOfTurnId { get; }

    /// <summary>The template --chat-template names, else the model folder's own; no template at all is an error.</summary>
    public static ChatPrompt Resolve(string? name, TextTokenizer tokenizer, string folder) =>
        new(ChatTemplates.Resolve(name, tokenizer, folder));

    /// <summary>Token ids of the conversation followed by the assistant's generation prompt.</summary>
    public int[] Encode(IReadOnlyList<ChatMessage> messages) => _template.EncodePrompt(messages);
}
