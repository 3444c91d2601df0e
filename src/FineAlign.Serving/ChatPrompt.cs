using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>
/// The one place the server renders chat messages: through the library's chat templates (Text/ChatTemplates), so a
/// served chat prompt is tokenized exactly as SFT trained it.
/// </summary>
internal sealed class ChatPrompt
{
    private readonly TextTokenizer _tokenizer;
    private readonly ChatFormat _format;

    private ChatPrompt(TextTokenizer tokenizer, ChatFormat format)
    {
        _tokenizer = tokenizer;
        _format = format;
        // ChatML ends a turn with <|im_end|>; a chat model's generation_config lists it beside EOS.
        if (format == ChatFormat.ChatML && tokenizer.Encode("<|im_end|>") is [int end]) EndOfTurnId = end;
    }

    /// <summary>The token that ends an assistant turn when it is not EOS itself (and is one token).</summary>
    public int? EndOfTurnId { get; }

    /// <summary>The named format (--chat-template) or the one recognised from the tokenizer's chat_template; else an error.</summary>
    public static ChatPrompt Resolve(string? name, TextTokenizer tokenizer, string folder) =>
        new(tokenizer, ChatTemplates.Resolve(name, tokenizer.ChatTemplate));

    /// <summary>Token ids of the conversation followed by the assistant's generation prompt.</summary>
    public int[] Encode(IReadOnlyList<ChatMessage> messages) => ChatTemplates.EncodePrompt(_tokenizer, _format, messages);
}
