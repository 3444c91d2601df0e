using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Text;

public class TokenizeCommandTests
{
    [Fact]
    public void Tokenize_PrintsIdsAndPieces_TableAndJson()
    {
        string qwen = Path.Combine(TestPaths.RequireShared("tokenizers"), "qwen3");
        var (code, output, err) = CliRunner.Run("tokenize", "--model", qwen, "--text", "Hello world<think>");
        Assert.True(code == 0, err);
        Assert.Contains("ids: [9707, 1879, 151667]", output);
        Assert.Contains("\"Ġworld\"", output);
        Assert.Contains("\" world\"", output);

        (code, output, err) = CliRunner.Run("tokenize", "-m", Path.Combine(TestPaths.RequireShared("tokenizers"), "mistral"),
            "--text", "Hello world", "--add-special-tokens", "--json");
        Assert.True(code == 0, err);
        Assert.Equal("""{"ids":[1,22557,1526],"pieces":["<s>","▁Hello","▁world"],"special":[true,false,false],"decoded":"<s> Hello world"}""", output.Trim());
    }

    [Fact]
    public void Tokenize_MissingFolderOrText_IsOneLineError()
    {
        var (code, _, err) = CliRunner.Run("tokenize", "--model", "/no/such/dir", "--text", "x");
        Assert.NotEqual(0, code);
        Assert.Contains("/no/such/dir: folder not found", err);
        (code, _, err) = CliRunner.Run("tokenize", "--model", "/tmp");
        Assert.NotEqual(0, code);
        Assert.Contains("--text", err);
    }
}
