namespace FineAlign.Text;

/// <summary>Reading tokenizer files safely: regular files only, bounded in size.</summary>
public static class TokenizerFiles
{
    /// <summary>Largest tokenizer file accepted (the biggest real tokenizer.json files are ~30 MB).</summary>
    public const long MaxBytes = 1L << 30;

    /// <summary>
    /// The bytes of <paramref name="path"/>. A device, pipe or anything that yields more bytes than its size says
    /// (e.g. <c>/dev/zero</c>) is refused after at most one read, instead of growing memory without end.
    /// A symlink is followed when its target stays inside the folder or its hub-cache repository (see <see cref="LinkedFile"/>).
    /// </summary>
    public static byte[] ReadAllBytes(string path)
    {
        var info = new FileInfo(path);
        if (Directory.Exists(path)) throw new FineAlignException($"{path}: is a directory, expected a file");
        if (!info.Exists) throw new FineAlignException($"{path}: file not found");
        info = new FileInfo(LinkedFile.Resolve(path));  // a hub-cache symlink: the target's size (refused if it leaves the folder)
        long length = info.Length;
        if (length > MaxBytes) throw new FineAlignException($"{path}: is {length} bytes; a tokenizer file is at most {MaxBytes} bytes");
        using var fs = new FileStream(info.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[length];
        int read = 0;
        while (read < length)
        {
            int n = fs.Read(buffer, read, (int)(length - read));
            if (n == 0) break;
            read += n;
        }
        if (read != length || fs.ReadByte() != -1)
            throw new FineAlignException($"{path}: is not a regular file (a device or pipe?); expected a tokenizer file");
        return buffer;
    }
}
