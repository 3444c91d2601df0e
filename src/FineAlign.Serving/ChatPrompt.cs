using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>
/// The one place the server renders chat messages: through the library's chat templates (Text/ChatTemplates), so a
/// served chat prompt is tokenized exactly as SFT trained it.
/// </summary>
internal static class ChatPrompt
{
    public static ChatFormat Resolve(string? name, TextTokenizer tokenizer) => ChatTemplates.Resolve(name, tokenizer.ChatTemplate);

    /// <summary>Token ids of the conversation followed by the assistant's generation prompt.</summary>
    public static int[] Encode(TextTokenizer tokenizer, ChatFormat format, IReadOnlyList<ChatMessage> messages) =>
        ChatTemplates.EncodePrompt(tokenizer, format, messages);
}
